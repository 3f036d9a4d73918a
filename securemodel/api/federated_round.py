"""FederatedRound: one round of federated training across silos, with secure aggregation."""

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
    AGGREGATING = "Aggregating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ParticipantState(StrEnum):
    """Where one silo stands in the round."""

    PENDING = "Pending"
    TRAINING = "Training"
    SUBMITTED = "Submitted"
    DROPPED = "Dropped"


MAX_CLIENTS = 100
CLIENT_NAME_MAX_LENGTH = 22
NAME_MAX_LENGTH = 40

MODEL = obj(
    "The global model the round starts from.",
    {
        "secureModelRef": name_ref("A SecureModel in the round's namespace whose trained model starts the round."),
        "fromRound": name_ref("A previous FederatedRound in the same namespace whose result starts this round."),
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
            "Namespace the silo's pod runs in and its budget lives in (default: the round's namespace).",
            pattern=DNS_LABEL,
            max_length=63,
        ),
        "data": obj(
            "The silo's local data.",
            {
                "source": data_source("builtin://<dataset>[?shard=i&of=n] or pvc://<claim>/<path>."),
                "samples": samples(),
            },
            required=["source"],
            rules=DATA_SIZE_RULES,
        ),
        "budgetRef": name_ref("The PrivacyBudget in the silo's namespace charged for its training."),
    },
    required=["name", "data", "budgetRef"],
)

SPEC = obj(
    "One round of federated training. Immutable once created.",
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
        "minClients": integer(
            "The round succeeds if at least this many silos submit (default: all of them).",
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
                "epsilon": epsilon("ε each silo spends in this round (> 0)."),
                "delta": delta("δ of each silo's guarantee (0 < δ < 1).", default=1.0e-5),
                "maxGradNorm": MAX_GRAD_NORM,
                "accountant": ACCOUNTANT,
            },
            required=["epsilon"],
        ),
        "secureAggregation": obj(
            "Secure aggregation (Bonawitz et al., CCS '17): the aggregator learns only the sum.",
            {
                "enabled": boolean("Mask the updates so the aggregator sees only their sum.", default=True),
                "threshold": integer(
                    "Silos that must survive for the masks of dropped ones to be removed "
                    "(default: minClients, or every client when that is unset). Only with enabled.",
                    minimum=2,
                    maximum=MAX_CLIENTS,
                ),
            },
            default={},
        ),
        "timeout": duration(
            "How long the round may take before it fails.", default="10m", at_least="1m", at_most="168h"
        ),
    },
    required=["model", "clients", "privacy"],
    rules=[
        rule(
            "self == oldSelf",
            "spec is immutable: a FederatedRound is one round; create a new one with spec.model.fromRound "
            "to train further",
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
            "!has(self.secureAggregation.threshold) || self.secureAggregation.enabled",
            "spec.secureAggregation.threshold is only allowed when secure aggregation is enabled",
            field_path=".secureAggregation.threshold",
            reason="FieldValueForbidden",
        ),
        rule(
            "!self.secureAggregation.enabled || (has(self.minClients) ? self.minClients : size(self.clients)) >= 2",
            "spec.secureAggregation needs at least 2 submitting clients (spec.minClients, or all clients "
            "when it is unset): the sum of a single update is that update",
            field_path=".secureAggregation.enabled",
        ),
    ],
)

STATUS = obj(
    "Progress and result of the round.",
    {
        "phase": phase("Where the round is.", list(Phase)),
        "observedGeneration": observed_generation(),
        "participants": array(
            "One entry per silo.",
            obj(
                "A silo's progress.",
                {
                    "name": string("Silo name."),
                    "state": string("Pending, Training, Submitted or Dropped.", enum=list(ParticipantState)),
                },
                required=["name", "state"],
            ),
        ),
        "model": obj(
            "The aggregated global model.",
            {
                "digest": string("sha256 of the encrypted artifact."),
                "accuracy": number("Accuracy of the global model."),
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
        "One round of federated training of a model across silos, each training with DP-SGD on "
        "its own data and budget; with secure aggregation the aggregator only sees the masked sum."
    ),
    spec=SPEC,
    status=STATUS,
    printer_columns=(
        column("Phase", ".status.phase"),
        READY_COLUMN,
        column("Epsilon", ".spec.privacy.epsilon", "number", "ε each silo spends"),
        column("Min", ".spec.minClients", "integer", "Silos that must submit", priority=1),
        column("Accuracy", ".status.model.accuracy", "number", "Accuracy of the global model"),
        AGE_COLUMN,
    ),
    # Silo pods are named <round>-<client>, which must fit a 63-character label.
    name_max_length=NAME_MAX_LENGTH,
    name_pattern=DNS_1035_LABEL,
)
