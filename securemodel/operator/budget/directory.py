"""What every PrivacyBudget protects and who may spend it, as the budget watch last saw it.

The operator charges a consumer to a budget only when :meth:`BudgetDirectory.refusal` finds no
reason against it (see :mod:`securemodel.privacy.coverage` for the rules), and a budget that shares
data with another budget of its namespace grants nothing (:meth:`BudgetDirectory.overlapping`,
read by every ledger transaction). A view one watch event behind is safe: a budget's sources may
only grow, consent is checked again before each claim, and a budget created to overlap another is
seen by the next transaction of either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from securemodel.operator.budget.ledger import BudgetRef
from securemodel.privacy.coverage import consents, covers, overlaps, touches

NOT_COVERED = "DataNotCovered"
OVERLAPPING = "BudgetOverlaps"
NOT_CONSENTED = "BudgetNotConsented"
EVALUATION_PROTECTED = "EvaluationProtected"
START_PROTECTED = "StartingWeightsProtected"
DATA_PROTECTED = "DataProtected"
IMAGE_NOT_ALLOWED = "ImageNotAllowed"
NOT_OBSERVED = "BudgetNotObserved"


@dataclass(frozen=True)
class BudgetData:
    """``spec.data.sources``, ``spec.consumers`` and ``spec.allowedImages`` of one budget."""

    sources: tuple[str, ...]
    consumers: tuple[Mapping[str, str], ...]
    allowed_images: tuple[str, ...] = ()  # empty: only the operator's worker image

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> BudgetData:
        data = spec.get("data") or {}
        return cls(tuple(data.get("sources") or ()), tuple(dict(c) for c in spec.get("consumers") or ()),
                   tuple(spec.get("allowedImages") or ()))  # fmt: skip

    def allows(self, image: str, worker_image: str) -> bool:
        """Whether pods of ``image`` may read the data: listed exactly, or the operator's worker image when none is."""
        return image in self.allowed_images if self.allowed_images else image == worker_image


@dataclass(frozen=True)
class Refusal:
    """Why a consumer may not be charged to a budget: a condition reason and its message."""

    reason: str
    message: str


class BudgetDirectory:
    """Every budget's :class:`BudgetData` by reference, kept by the budget watch."""

    def __init__(self) -> None:
        self._budgets: dict[BudgetRef, BudgetData] = {}

    def put(self, ref: BudgetRef, spec: Mapping[str, Any]) -> set[BudgetRef]:
        """Record the budget's spec; return the other budgets whose overlaps this changed."""
        before = self._neighbours_overlapping(ref)
        self._budgets[ref] = BudgetData.of(spec)
        return before ^ self._neighbours_overlapping(ref)

    def drop(self, ref: BudgetRef) -> set[BudgetRef]:
        """Forget a deleted budget; return the budgets that overlapped it."""
        before = self._neighbours_overlapping(ref)
        self._budgets.pop(ref, None)
        return before

    def knows(self, ref: BudgetRef) -> bool:
        """Whether the budget's data and consumers have been recorded (a budget's first event may still be queued)."""
        return ref in self._budgets

    def unrecorded(self, indexed: Iterable[BudgetRef], namespace: str) -> tuple[str, ...]:
        """Names of the budgets of ``namespace`` among ``indexed`` (every budget the watch has listed) whose spec is
        not recorded yet, sorted: while there is one, :meth:`protecting` may not know all that is protected."""
        return tuple(sorted(ref.name for ref in indexed if ref.namespace == namespace and ref not in self._budgets))

    def protecting(self, namespace: str, source: str) -> tuple[str, ...]:
        """Names of the budgets of ``namespace`` that protect any example of ``source``, sorted: what may not be
        declared public (:func:`~securemodel.privacy.coverage.touches`). Complete only when :meth:`unrecorded` is
        empty for the namespace."""
        return tuple(sorted(other.name for other, theirs in self._budgets.items()
                            if other.namespace == namespace and touches(theirs.sources, source)))  # fmt: skip

    def overlapping(self, ref: BudgetRef) -> tuple[str, ...]:
        """Names of the other budgets of the namespace that cover data ``ref`` covers, sorted."""
        return tuple(sorted(other.name for other in self._neighbours_overlapping(ref)))

    def refusal(
        self, ref: BudgetRef, kind: str, namespace: str, source: str, image: str, worker_image: str,
        evaluation: str | None = None,
    ) -> Refusal | None:  # fmt: skip
        """Why a ``kind`` in ``namespace`` whose pods run ``image`` on ``source`` may not claim from ``ref``; None if
        it may (or if the budget is unknown: the consumer then waits for it to exist).

        ``evaluation`` is the source the consumer declares public (its accuracy is published unaccounted):
        data a budget of the namespace protects cannot be declared public. ``worker_image`` is the operator's
        own, the only image a budget without ``spec.allowedImages`` lets read its data.
        """
        data = self._budgets.get(ref)
        if data is None:
            return None
        if not data.allows(image, worker_image):
            allowed = ", ".join(data.allowed_images) or f"the operator's worker image {worker_image}"
            return Refusal(IMAGE_NOT_ALLOWED, f"PrivacyBudget {ref.name} lets only {allowed} read its data, not {image}: "
                                              "a data steward lists an image in spec.allowedImages to trust its code")  # fmt: skip
        if evaluation is not None:
            protecting = self.protecting(namespace, evaluation)
            if protecting:
                return Refusal(EVALUATION_PROTECTED, f"spec.data.evaluation.source {evaluation} is protected by PrivacyBudget "
                                                     f"{', '.join(protecting)}: data a budget protects cannot be declared "
                                                     "public, and accuracy on it would be published unaccounted")  # fmt: skip
        if not consents(data.consumers, kind, namespace, ref.namespace):
            return Refusal(NOT_CONSENTED, f"PrivacyBudget {ref.namespace}/{ref.name} does not consent to be spent by a "
                                          f"{kind} of namespace {namespace}: its spec.consumers does not name it")  # fmt: skip
        if not covers(data.sources, source):
            covered = ", ".join(data.sources) or "nothing"
            return Refusal(NOT_COVERED, f"PrivacyBudget {ref.name} protects {covered}, not {source}: a budget is "
                                        "charged only for the data it declares in spec.data.sources")  # fmt: skip
        others = self.overlapping(ref)
        if others:
            return Refusal(OVERLAPPING, f"PrivacyBudget {ref.name} shares data with PrivacyBudget {', '.join(others)} of "
                                        "this namespace: neither grants until a data steward makes their spec.data "
                                        "disjoint")  # fmt: skip
        return None

    def _neighbours_overlapping(self, ref: BudgetRef) -> set[BudgetRef]:
        data = self._budgets.get(ref)
        if data is None:
            return set()
        return {
            other
            for other, theirs in self._budgets.items()
            if other != ref and other.namespace == ref.namespace and overlaps(data.sources, theirs.sources)
        }

