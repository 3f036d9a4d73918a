"""The ``PrivacyBudget.status`` fields the ledger owns: totals, the sealed claims, the head."""

from __future__ import annotations

import math
import sys
from typing import Any, Final

from securemodel.privacy.chain import seal
from securemodel.privacy.claims import BudgetSpec, Ledger, totals

# JSON has no infinity: an unbounded composed epsilon is written as the largest float.
UNBOUNDED: Final = sys.float_info.max


def status_fields(ledger: Ledger, spec: BudgetSpec, *, key: bytes = b"") -> dict[str, Any]:
    """The status fields of ``ledger`` under ``spec``, ready to be written as a patch.

    ``epsilonCommitted``, ``epsilonReserved`` and ``epsilonAvailable`` are the
    composed figures at ``spec.delta`` (:class:`~securemodel.privacy.claims.Totals`;
    an unbounded one is written as ±:data:`UNBOUNDED`); ``epsilonSummed`` and
    ``deltaSummed`` are what plain summing of the Committed and Reserved claims
    would charge. ``claims`` (and ``compacted``) carry their chain digests and
    ``ledgerHead`` seals the ledger under ``key`` (:func:`securemodel.privacy.chain.seal`).
    """
    sums = totals(ledger, spec)
    return {
        "epsilonCommitted": _finite(sums.committed),
        "epsilonReserved": _finite(sums.reserved),
        "epsilonAvailable": _finite(sums.available),
        "epsilonSummed": sums.summed_epsilon,
        "deltaSummed": sums.summed_delta,
        "epsilonUnlocked": ledger.epsilon_unlocked,
        **seal(ledger, key=key),
    }


def _finite(value: float) -> float:
    return math.copysign(UNBOUNDED, value) if math.isinf(value) else value
