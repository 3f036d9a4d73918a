"""PrivacyBudget: the total (ε, δ) a dataset may ever release, and the ledger of who spent it."""

from enum import StrEnum

from securemodel.api.kinds import AGE_COLUMN, GROUP, READY_COLUMN, Kind, column
from securemodel.api.schema import (
    DNS_LABEL,
    array,
    conditions,
    delta,
    epsilon,
    integer,
    number,
    obj,
    observed_generation,
    phase,
    rule,
    string,
)

DEFAULT_UNLOCK_STEPS = 10
# spec.data.sources: a data source (builtin://<name>[?shard=i&of=n], pvc://<claim>/<path>) or a pvc:// prefix ending in /.
BUDGET_DATA = (
    r"^(builtin://[a-z][a-z0-9_]*(\?shard=(0|[1-9][0-9]*)&of=[1-9][0-9]*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^\s?#]*)$"
)
# With the value "true", a budget with committed spend may be deleted (its ledger is lost).
ALLOW_DELETE_WITH_SPEND = f"{GROUP}/allow-delete-with-spend"


class Phase(StrEnum):
    """``status.phase`` of a PrivacyBudget."""

    AVAILABLE = "Available"
    EXHAUSTED = "Exhausted"


class ClaimState(StrEnum):
    """Where a claim is in its life: Waiting -> Reserved -> Committed, or Released, or Rejected."""

    WAITING = "Waiting"  # accepted, holds nothing yet
    RESERVED = "Reserved"  # granted: its epsilon is held for it
    COMMITTED = "Committed"  # spent for good (final)
    RELEASED = "Released"  # given back, no pod had started (final)
    REJECTED = "Rejected"  # can never be granted (final)


class RejectionReason(StrEnum):
    """Why a claim was rejected; also the reason a consumer's condition can show."""

    DELTA_ABOVE_BUDGET = "DeltaAboveBudget"
    EPSILON_ABOVE_BUDGET = "EpsilonAboveBudget"


class Policy(StrEnum):
    """The order in which waiting claims are granted."""

    FCFS = "fcfs"
    DPF = "dpf"


SPEC = obj(
    "The privacy budget of one dataset.",
    {
        "epsilon": epsilon(
            "Total ε the dataset may ever release (> 0): the composition (PLD accountant) of every Committed "
            "and Reserved claim, at spec.delta, stays within it. It may be raised at any time, but not lowered "
            "below status.epsilonCommitted + status.epsilonReserved (the ValidatingAdmissionPolicy rejects that)."
        ),
        "delta": delta(
            "The dataset's lifetime δ (0 < δ < 1): every claim composes within (epsilon, delta). A claim asking "
            "for more δ than this is rejected.",
            default=1.0e-5,
        ),
        "policy": string(
            "Order in which waiting claims are granted: fcfs (first come, first served) or "
            "dpf (Dominant Private block Fairness, Luo et al., OSDI '21: smallest demand first, "
            "with budget unlocked in steps as claims arrive).",
            enum=list(Policy),
            default=Policy.FCFS,
        ),
        "data": obj(
            "The data this budget is the only ledger of. A SecureModel or FederatedRound is charged to the budget "
            "only if the budget covers its source; two budgets of one namespace that cover common data both grant "
            "nothing until a data steward makes them disjoint.",
            {
                "sources": array(
                    "Sources the budget protects: builtin://<name> or pvc://<claim>/<path> (the dataset and all of "
                    "its shards), one shard of it (?shard=i&of=n), or every file under a prefix ending in / "
                    "(pvc://<claim>/ or pvc://<claim>/<dir>/). Sources may be added, never removed: a budget never "
                    "drops data it may have charged for.",
                    string("A source or a pvc:// prefix ending in /.", pattern=BUDGET_DATA, max_length=512),
                    min_items=1,
                    max_items=64,
                    list_type="set",
                ),
            },
            required=["sources"],
            rules=[
                rule(
                    "oldSelf.sources.all(s, s in self.sources)",
                    "spec.data.sources may only grow: a budget never drops data it may have charged for",
                    field_path=".sources",
                    reason="FieldValueForbidden",
                ),
            ],
        ),
        "consumers": array(
            "Who outside this namespace may spend the budget (consent): each entry lets the kind in that namespace "
            "claim from it, e.g. {kind: FederatedRound, namespace: hub}. Consumers of the budget's own namespace "
            "always may.",
            obj(
                "A kind and namespace that may spend the budget.",
                {
                    "kind": string("SecureModel or FederatedRound.", enum=["SecureModel", "FederatedRound"]),
                    "namespace": string("The consumer's namespace.", pattern=DNS_LABEL, max_length=63),
                },
                required=["kind", "namespace"],
            ),
            max_items=64,
            list_type="map",
            map_keys=["kind", "namespace"],
        ),
        "allowedImages": array(
            "The images whose pods may read the data (a train pod's or a silo's image), as exact references; a "
            "digest pins one build (registry/repo@sha256:...). Absent: only the operator's worker image. A "
            "SecureModel or FederatedRound whose pods would run another image on the data gets no pod and a "
            "condition (ImageNotAllowed): its code would read the raw records.",
            string("An image reference.", min_length=1, max_length=512),
            max_items=32,
            list_type="set",
        ),
        "dpf": obj(
            "Tuning of the dpf policy; only allowed with policy dpf.",
            {
                "unlockSteps": integer(
                    "Each arriving claim unlocks epsilon/unlockSteps until the whole budget is unlocked. "
                    f"Without a dpf block, dpf uses {DEFAULT_UNLOCK_STEPS}.",
                    minimum=1,
                    maximum=10000,
                    default=DEFAULT_UNLOCK_STEPS,
                ),
            },
        ),
    },
    required=["epsilon", "data"],
    rules=[
        rule(
            "!has(self.dpf) || self.policy == 'dpf'",
            "spec.dpf is only allowed with spec.policy dpf",
            field_path=".dpf",
            reason="FieldValueForbidden",
        ),
    ],
)

CONSUMER = obj(
    "The object the claim is charged for.",
    {
        "kind": string("SecureModel or FederatedRound."),
        "namespace": string("Namespace of the consumer."),
        "name": string("Name of the consumer."),
        "uid": string("UID of the consumer, so a re-created object is a new consumer."),
        "version": string(
            "Version of the consumer's spec the claim is for, where the consumer claims once per version "
            "(a SecureModel retrained after a change of its model, data, training or privacy)."
        ),
    },
    required=["kind", "namespace", "name", "uid"],
)

MECHANISM = obj(
    "What the claim releases, composed into the budget's spend: DP-SGD (σ, q, steps) or a generic (ε, δ).",
    {
        "type": string("DPSGD or EpsilonDelta.", enum=["DPSGD", "EpsilonDelta"]),
        "noiseMultiplier": number("DP-SGD: the noise multiplier σ the operator calibrated."),
        "sampleRate": number("DP-SGD: the Poisson sample rate q."),
        "steps": integer("DP-SGD: the steps (planned while Reserved, run once Committed).", fmt="int64"),
        "epsilon": number("EpsilonDelta: ε."),
        "delta": number("EpsilonDelta: δ."),
    },
    required=["type"],
)

CLAIM = obj(
    "One entry of the ledger.",
    {
        "consumer": CONSUMER,
        "epsilon": number("ε claimed: the consumer's own guarantee (spent, once Committed)."),
        "delta": number("δ claimed."),
        "mechanism": MECHANISM,
        "state": string(
            "Waiting, Reserved (held by a running consumer), Committed (spent for good), "
            "Released (returned before any pod read the data) or Rejected.",
            enum=list(ClaimState),
        ),
        "updated": string("When the state last changed.", fmt="date-time"),
        "reason": string("Why the claim was rejected (Rejected claims only).", enum=list(RejectionReason)),
        "dispatched": string(
            "When the operator recorded, before creating it, that the consumer's train Job may exist.", fmt="date-time"
        ),
        "started": string(
            "When the operator saw a container of the consumer's train Job run (the kubelet's report): from then "
            "on the claim can only end Committed.",
            fmt="date-time",
        ),
        "previous": string("The digest of the entry before this one (hash chain)."),
        "digest": string("HMAC-SHA256 of the previous digest and this entry (hash chain)."),
    },
    required=["consumer", "epsilon", "delta", "state", "updated"],
)

COMPACTED = obj(
    "Settled entries folded into one record, so the ledger fits in one object: their mechanisms with counts, "
    "their keys (a folded consumer cannot claim twice) and their chain digest.",
    {
        "entries": integer("How many entries were folded.", fmt="int64"),
        "keys": array("The folded claims' keys.", string("A claim key.")),
        "mechanisms": array(
            "The folded mechanisms with their counts.",
            obj("A mechanism and how many folded entries ran it.", {"mechanism": MECHANISM, "count": integer("Count.")}),
        ),
        "epsilonSummed": number("ε the folded entries would charge summed."),
        "deltaSummed": number("δ the folded entries would charge summed."),
        "previous": string("The chain digest before the record."),
        "digest": string("The record's chain digest."),
    },
)

STATUS = obj(
    "What has been spent and who holds the rest.",
    {
        "phase": phase("Available while ε is left to grant, Exhausted when none is.", list(Phase)),
        "observedGeneration": observed_generation(),
        "epsilonCommitted": number("ε spent for good: the composition of the Committed claims at spec.delta."),
        "epsilonReserved": number(
            "ε held by running consumers: the composition of Committed and Reserved claims, less epsilonCommitted."
        ),
        "epsilonAvailable": number("spec.epsilon - epsilonCommitted - epsilonReserved: the headroom."),
        "epsilonSummed": number("What plain summing of the Committed and Reserved claims' ε would charge."),
        "deltaSummed": number("What plain summing of the Committed and Reserved claims' δ would charge."),
        "ledgerHead": string("The hash chain's head: it seals the ledger's end and epsilonUnlocked."),
        "compacted": COMPACTED,
        "epsilonUnlocked": number(
            "Under policy dpf: the ε unlocked so far by arriving claims (kept here so an operator "
            "restart never unlocks twice)."
        ),
        "claims": array("The ledger: one entry per consumer, append-mostly.", CLAIM),
        "conditions": conditions(),
    },
)

KIND = Kind(
    kind="PrivacyBudget",
    plural="privacybudgets",
    short_name="pbudget",
    description=(
        "The differential-privacy budget of one dataset: how much ε may ever be released, "
        "and a ledger of the claims of the models and federated rounds trained on it."
    ),
    spec=SPEC,
    status=STATUS,
    printer_columns=(
        column("Phase", ".status.phase"),
        READY_COLUMN,
        column("Epsilon", ".spec.epsilon", "number", "Total ε"),
        column("Committed", ".status.epsilonCommitted", "number", "ε spent for good"),
        column("Reserved", ".status.epsilonReserved", "number", "ε held by consumers not yet done"),
        column("Available", ".status.epsilonAvailable", "number", "ε left to grant"),
        column("Policy", ".spec.policy", priority=1),
        AGE_COLUMN,
    ),
)
