"""FederatedRound: federated training across silos on Flower, with SecAgg+ and per-silo DP budgets."""

from enum import StrEnum

from securemodel.api.kinds import AGE_COLUMN, READY_COLUMN, Kind, column
from securemodel.api.schema import (
    DNS_1035_LABEL,
    DNS_LABEL,
    array,
    boolean,
    conditions,
    data_source,
    delta,
    duration,
    epsilon,
    integer,
    name_ref,
    number,
    obj,
    observed_generation,
    phase,
    rule,
    string,
)
from securemodel.api.secure_model import ACCOUNTANT, DATA_SIZE_RULES, MAX_GRAD_NORM, samples


class Phase(StrEnum):
    """``status.phase`` of a FederatedRound."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ParticipantState(StrEnum):
    """Where one silo stands in the round."""

    PENDING = "Pending"  # no pod of the silo has run (waiting for consent, budget or the SuperLink)
    TRAINING = "Training"  # its SuperNode runs
    SUBMITTED = "Submitted"  # its masked update reached the aggregate of the round
    DROPPED = "Dropped"  # it stopped answering in the round, or its pod ended before the round did


MAX_CLIENTS = 100
MAX_ROUNDS = 1000
CLIENT_NAME_MAX_LENGTH = 22
NAME_MAX_LENGTH = 40
SHARES = "(has(self.secureAggregation.numShares) ? self.secureAggregation.numShares : size(self.clients))"
THRESHOLD = (
    "(has(self.secureAggregation.threshold) ? self.secureAggregation.threshold"
    " : (has(self.minClients) ? self.minClients : size(self.clients)))"
)

MODEL = obj(
    "The global model the round starts from.",
    {
        "secureModelRef": name_ref(
            "A SecureModel in the round's namespace whose built-in architecture and parameters (spec.model) the "
            "round trains from fresh weights; it must not use a custom image or entrypoint (that code would run "
            "next to every silo's data)."
        ),
        "fromRound": name_ref(
            "A previous FederatedRound in the same namespace whose global model starts this round; it must have "
            "succeeded."
        ),
    },
    rules=[
        rule(
            "has(self.secureModelRef) != has(self.fromRound)",
            "exactly one of spec.model.secureModelRef and spec.model.fromRound must be set",
        ),
    ],
)

CLIENT = obj(
    "One silo: trains locally on its own data, charged to its own budget.",
    {
        "name": string(
            "Unique name of the silo (DNS-1035 label); it prefixes the silo's pod and key names.",
            pattern=DNS_1035_LABEL,
            max_length=CLIENT_NAME_MAX_LENGTH,
        ),
        "namespace": string(
            "Namespace the silo's SuperNode runs in and its budget lives in (default: the round's namespace). A "
            "budget of another namespace must consent in its spec.consumers (kind FederatedRound, the round's "
            "namespace).",
            pattern=DNS_LABEL,
            max_length=63,
        ),
        "data": obj(
            "The silo's local data; only the silo's pod mounts it, and DP-SGD reads all of it (none is held out).",
            {
                "source": data_source("builtin://<dataset>[?shard=i&of=n] or pvc://<claim>/<path>."),
                "samples": samples(),
            },
            required=["source"],
            rules=DATA_SIZE_RULES,
        ),
        "budgetRef": name_ref(
            "The PrivacyBudget in the silo's namespace charged for its training; its spec.data.sources must cover "
            "the silo's data source."
        ),
    },
    required=["name", "data", "budgetRef"],
)

# The public evaluation part of a built-in dataset (securemodel.data.sources, the part rule).
EVALUATION_SOURCE = r"^builtin://[a-z][a-z0-9_]*\?part=evaluation$"

EVALUATION = obj(
    "Data the user DECLARES PUBLIC, on which the aggregator (which never mounts a silo's data) evaluates the "
    "global model after every round: its accuracy on all of it is published exactly, unaccounted, in "
    "status.model, Events and the Accuracy column. No silo evaluates on its own data. Without evaluation, no "
    "accuracy is measured or published: nothing computed from the silos' data leaves their pods outside the "
    "privacy accounting but their DP-SGD updates.",
    {
        "source": string(
            "builtin://<dataset>?part=evaluation: the public evaluation part of the silos' built-in dataset, which "
            "no silo's data contains (silos train on shards of the training part, builtin://<dataset>).",
            pattern=EVALUATION_SOURCE,
            max_length=512,
        ),
    },
    required=["source"],
)

SPEC = obj(
    "Federated training of one model across silos (FedAvg on Flower). Immutable once created.",
    {
        "model": MODEL,
        "clients": array(
            "The silos taking part, unique by name.",
            CLIENT,
            min_items=1,
            max_items=MAX_CLIENTS,
            list_type="map",
            map_keys=["name"],
        ),
        "rounds": integer(
            "FedAvg rounds; each silo's ε is calibrated for its steps over all of them.",
            minimum=1,
            maximum=MAX_ROUNDS,
            default=1,
        ),
        "minClients": integer(
            "A round succeeds if at least this many silos submit (default: all of them).",
            minimum=1,
            maximum=MAX_CLIENTS,
        ),
        "training": obj(
            "Local training of each silo.",
            {
                "localEpochs": integer("Local passes over the silo's data (≥ 1).", minimum=1, maximum=10000, default=1),
                "batchSize": integer("Expected local batch size (≥ 1).", minimum=1, default=32),
                "learningRate": number("Learning rate (> 0).", minimum=0, exclusive_minimum=True, default=0.1),
            },
            default={},
        ),
        "privacy": obj(
            "Per-silo DP-SGD; each silo's ε is charged to its own budget.",
            {
                "epsilon": epsilon("ε each silo spends over all rounds (> 0)."),
                "delta": delta("δ of each silo's guarantee (0 < δ < 1).", default=1.0e-5),
                "maxGradNorm": MAX_GRAD_NORM,
                "accountant": ACCOUNTANT,
            },
            required=["epsilon"],
        ),
        "secureAggregation": obj(
            "Secure aggregation with Flower's SecAgg+ (Bell et al., CCS '20): the aggregator learns only the sum.",
            {
                "enabled": boolean("Mask the updates so the aggregator sees only their sum.", default=True),
                "numShares": integer(
                    "Silos each silo's key is secret-shared with (default: every silo). Only with enabled.",
                    minimum=3,
                    maximum=MAX_CLIENTS,
                ),
                "threshold": integer(
                    "Reconstruction threshold: shares needed to remove a dropped silo's masks; above half of "
                    "numShares and at most minClients (default: minClients, or every client when that is unset). "
                    "Only with enabled.",
                    minimum=2,
                    maximum=MAX_CLIENTS,
                ),
            },
            default={},
        ),
        "evaluation": EVALUATION,
        "timeout": duration(
            "How long one FedAvg round may take before the round fails.", default="10m", at_least="1m", at_most="168h"
        ),
    },
    required=["model", "clients", "privacy"],
    rules=[
        rule(
            "self == oldSelf",
            "spec is immutable: create a new FederatedRound with spec.model.fromRound to train further",
        ),
        rule(
            "!has(self.evaluation) || self.clients.all(c, !c.data.source.startsWith('builtin://')"
            " || self.evaluation.source == c.data.source.find('^builtin://[a-z][a-z0-9_]*') + '?part=evaluation')",
            "spec.evaluation.source must be the public evaluation part of the silos' built-in dataset: "
            "builtin://<dataset>?part=evaluation",
            field_path=".evaluation.source",
        ),
        rule(
            "!has(self.minClients) || self.minClients <= size(self.clients)",
            "spec.minClients must not exceed the number of clients",
            field_path=".minClients",
        ),
        rule(
            "!has(self.secureAggregation.threshold) || self.secureAggregation.threshold <= size(self.clients)",
            "spec.secureAggregation.threshold must not exceed the number of clients",
            field_path=".secureAggregation.threshold",
        ),
        rule(
            "!has(self.secureAggregation.threshold) || !has(self.minClients)"
            " || self.secureAggregation.threshold <= self.minClients",
            "spec.secureAggregation.threshold must not exceed spec.minClients: a round that succeeds "
            "with minClients submissions must be able to unmask their sum",
            field_path=".secureAggregation.threshold",
        ),
        rule(
            "!has(self.secureAggregation.numShares) || self.secureAggregation.numShares <= size(self.clients)",
            "spec.secureAggregation.numShares must not exceed the number of clients",
            field_path=".secureAggregation.numShares",
        ),
        rule(
            f"!self.secureAggregation.enabled || 2 * {THRESHOLD} > {SHARES}",
            "spec.secureAggregation.threshold (default: minClients) must be above half of numShares (default: "
            "every client): SecAgg+ is secure only when fewer than half of the shares can be put together",
            field_path=".secureAggregation.threshold",
        ),
        *(
            rule(
                f"!has(self.secureAggregation.{field}) || self.secureAggregation.enabled",
                f"spec.secureAggregation.{field} is only allowed when secure aggregation is enabled",
                field_path=f".secureAggregation.{field}",
                reason="FieldValueForbidden",
            )
            for field in ("threshold", "numShares")
        ),
        rule(
            "!self.secureAggregation.enabled || (has(self.minClients) ? self.minClients : size(self.clients)) >= 2",
            "spec.secureAggregation needs at least 2 submitting clients (spec.minClients, or all clients "
            "when it is unset): the sum of a single update is that update",
            field_path=".secureAggregation.enabled",
        ),
    ],
)

PARTICIPANT = obj(
    "One silo's part in the round, its claim and the DP-SGD mechanism the operator calibrated for it.",
    {
        "name": string("Silo name."),
        "namespace": string("Namespace of the silo's SuperNode and budget."),
        "budget": string("The silo's PrivacyBudget."),
        "state": string("Where the silo stands now.", enum=list(ParticipantState)),
        "rounds": array(
            "The silo's state in each FedAvg round that ended.",
            obj(
                "The silo in one round.",
                {
                    "round": integer("Round number, from 1.", minimum=1),
                    "state": string("Submitted or Dropped.", enum=list(ParticipantState)),
                },
                required=["round", "state"],
            ),
        ),
        "claim": string("State of the silo's claim on its budget (Waiting, Reserved, Committed, Released, Rejected)."),
        "epsilonClaimed": number("ε the silo's claim holds (the target its noise was calibrated for)."),
        "epsilonSpent": number("ε committed to the silo's budget once its claim is settled."),
        "delta": number("δ of the silo's guarantee."),
        "noiseMultiplier": number("σ of the silo's DP-SGD, calibrated by the operator."),
        "sampleRate": number("Poisson sample rate q = batch size ÷ the silo's training examples."),
        "stepsPerRound": integer("Noisy steps per round: ceil(localEpochs ÷ q).", minimum=0),
        "steps": integer("Noisy steps over all rounds, the run σ was calibrated for (an accountant at σ, q and "
                         "these steps at delta reproduces epsilonClaimed's bound).", minimum=0),
        "reason": string("Why the silo cannot take part yet, if it cannot (CamelCase)."),
        "message": string("Detail of reason."),
    },
    required=["name", "state"],
)

STATUS = obj(
    "Progress and result of the round.",
    {
        "phase": phase("Pending, Running (round k of R), Succeeded or Failed.", list(Phase)),
        "observedGeneration": observed_generation(),
        "rounds": integer("FedAvg rounds of the spec.", minimum=0),
        "roundsCompleted": integer("FedAvg rounds whose global model was written.", minimum=0),
        "submitted": string("Silos that submitted in the last completed round, of all silos (e.g. 2/3)."),
        "participants": array("One entry per silo.", PARTICIPANT),
        "model": obj(
            "The global model after the last completed round: an AES-256-GCM artifact under the round's data key.",
            {
                "digest": string("sha256 of the encrypted artifact."),
                "artifact": string("Path of the artifact on the round's artifacts volume."),
                "accuracy": number("Accuracy of the global model on all of spec.evaluation.source (public data), "
                                   "measured by the aggregator; absent without spec.evaluation."),
                "evaluationExamples": integer("Examples of spec.evaluation.source the accuracy is measured on.",
                                              minimum=0),
            },
        ),
        "conditions": conditions(),
    },
)

KIND = Kind(
    kind="FederatedRound",
    plural="federatedrounds",
    short_name="fround",
    description=(
        "Federated training of a model across silos on Flower: each silo trains with DP-SGD on its own data, "
        "charged to its own budget (which must consent); with SecAgg+ the aggregator only sees the masked sum."
    ),
    spec=SPEC,
    status=STATUS,
    printer_columns=(
        column("Phase", ".status.phase"),
        READY_COLUMN,
        column("Round", ".status.roundsCompleted", "integer", "FedAvg rounds completed"),
        column("Rounds", ".spec.rounds", "integer", "FedAvg rounds of the spec"),
        column("Submitted", ".status.submitted", description="Silos that submitted in the last round, of all"),
        column("Accuracy", ".status.model.accuracy", "number", "Accuracy of the global model on the public spec.evaluation"),
        column("Epsilon", ".spec.privacy.epsilon", "number", "ε each silo spends", priority=1),
        column("Min", ".spec.minClients", "integer", "Silos that must submit", priority=1),
        AGE_COLUMN,
    ),
    # Silo Jobs are named <round>-<client>, which must fit a 63-character label.
    name_max_length=NAME_MAX_LENGTH,
    name_pattern=DNS_1035_LABEL,
)
