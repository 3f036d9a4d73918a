"""Differential-privacy accounting and the privacy-budget ledger (pure: no Kubernetes).

* :mod:`~securemodel.privacy.accounting`: epsilon of Poisson-sampled DP-SGD
  (``prv`` and ``rdp`` accountants of Google's dp-accounting).
* :mod:`~securemodel.privacy.calibration`: the noise multiplier for a target
  epsilon, sample rate and steps from the training spec.
* :mod:`~securemodel.privacy.mechanisms`: what a ledger entry released (DP-SGD
  or a generic (epsilon, delta) pair).
* :mod:`~securemodel.privacy.composition`: the epsilon of many mechanisms
  together (PLD composition at the budget's lifetime delta).
* :mod:`~securemodel.privacy.claims`: the ledger as plain data, mirroring
  ``PrivacyBudget`` spec and status.
* :mod:`~securemodel.privacy.ledger`: the ledger rules (submit, commit,
  release, reconcile), each returning the new ledger and its decisions.
* :mod:`~securemodel.privacy.scheduling`: the ``fcfs`` and ``dpf`` policies.
* :mod:`~securemodel.privacy.chain`: the ledger's hash chain, its
  verification and the transition rules.
* :mod:`~securemodel.privacy.compaction`: settled entries folded into one record.
* :mod:`~securemodel.privacy.status`: the status fields written back.
"""

from securemodel.privacy.accounting import ACCOUNTANTS, DEFAULT_ACCOUNTANT, Accountant, dp_sgd_epsilon
from securemodel.privacy.calibration import (
    Calibration,
    CalibrationError,
    calibrate_dp_sgd,
    calibrate_noise,
    poisson_sample_rate,
    steps_for_epochs,
)
from securemodel.privacy.chain import LedgerTampered, budget_key, check_transition, verify
from securemodel.privacy.claims import (
    BudgetSpec,
    Claim,
    ClaimState,
    Compacted,
    Consumer,
    Ledger,
    RejectionReason,
    Totals,
    totals,
)
from securemodel.privacy.compaction import compact, compacted_if_large
from securemodel.privacy.composition import composed_epsilon, standalone_epsilon
from securemodel.privacy.ledger import (
    Decision,
    DecisionKind,
    LedgerError,
    Outcome,
    Submission,
    can_set_epsilon,
    commit,
    dispatch,
    epsilon_floor,
    mark_started,
    reconcile,
    release,
    submit,
    submit_all,
)
from securemodel.privacy.mechanisms import DpSgd, EpsilonDelta, Mechanism
from securemodel.privacy.scheduling import POLICIES, Policy
from securemodel.privacy.status import status_fields

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_ACCOUNTANT",
    "POLICIES",
    "Accountant",
    "BudgetSpec",
    "Calibration",
    "CalibrationError",
    "Claim",
    "ClaimState",
    "Compacted",
    "Consumer",
    "Decision",
    "DecisionKind",
    "DpSgd",
    "EpsilonDelta",
    "Ledger",
    "LedgerError",
    "LedgerTampered",
    "Mechanism",
    "Outcome",
    "Policy",
    "RejectionReason",
    "Submission",
    "Totals",
    "budget_key",
    "calibrate_dp_sgd",
    "calibrate_noise",
    "can_set_epsilon",
    "check_transition",
    "commit",
    "compact",
    "compacted_if_large",
    "composed_epsilon",
    "dispatch",
    "dp_sgd_epsilon",
    "epsilon_floor",
    "mark_started",
    "poisson_sample_rate",
    "reconcile",
    "release",
    "standalone_epsilon",
    "status_fields",
    "steps_for_epochs",
    "submit",
    "submit_all",
    "totals",
    "verify",
]
