"""Differential-privacy accounting and the privacy-budget ledger (pure: no Kubernetes).

* :mod:`~securemodel.privacy.accounting`: epsilon of Poisson-sampled DP-SGD
  (``prv`` and ``rdp`` accountants of Google's dp-accounting).
* :mod:`~securemodel.privacy.calibration`: the noise multiplier for a target
  epsilon, sample rate and steps from the training spec.
* :mod:`~securemodel.privacy.claims`: the ledger as plain data, mirroring
  ``PrivacyBudget`` spec and status.
* :mod:`~securemodel.privacy.ledger`: the ledger rules (submit, commit,
  release, reconcile), each returning the new ledger and its decisions.
* :mod:`~securemodel.privacy.scheduling`: the ``fcfs`` and ``dpf`` policies.
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
from securemodel.privacy.claims import (
    BudgetSpec,
    Claim,
    ClaimState,
    Consumer,
    Ledger,
    RejectionReason,
    Totals,
    status_fields,
    totals,
)
from securemodel.privacy.ledger import (
    Decision,
    DecisionKind,
    LedgerError,
    Outcome,
    can_set_epsilon,
    commit,
    dispatch,
    epsilon_floor,
    mark_started,
    reconcile,
    release,
    submit,
)
from securemodel.privacy.scheduling import POLICIES, Policy

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
    "Consumer",
    "Decision",
    "DecisionKind",
    "Ledger",
    "LedgerError",
    "Outcome",
    "Policy",
    "RejectionReason",
    "Totals",
    "calibrate_dp_sgd",
    "calibrate_noise",
    "can_set_epsilon",
    "commit",
    "dispatch",
    "dp_sgd_epsilon",
    "epsilon_floor",
    "poisson_sample_rate",
    "reconcile",
    "mark_started",
    "release",
    "status_fields",
    "steps_for_epochs",
    "submit",
    "totals",
]
