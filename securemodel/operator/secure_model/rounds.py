"""The FederatedRound a SecureModel serves (``spec.model.fromRound``): its global model, or why it has none (pure).

What the round produced is read from its results ConfigMap, which the operator writes from its
aggregator's report (as a round that starts from another does,
:func:`securemodel.operator.federated.observe.resolve_start`), never from the round's status.
The artifact path and digest found there are only where to look and what to expect: the compress
pod authenticates the file under the round's data key as bound to the round's uid and final round
number (its ``spec.rounds``, from the round itself, never from the ConfigMap) and refuses any other
digest, so a file that is not that round's final global model (an earlier round's of the same run
included) is never compressed or served. The round's status is read only to tell a failed round
from one still running when its aggregator left no report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from securemodel.operator.federated import children as round_children
from securemodel.operator.federated.views import AGGREGATOR_RESULT

ROUND_NOT_FOUND: Final = "RoundNotFound"
WAITING_FOR_ROUND: Final = "WaitingForRound"
ROUND_FAILED: Final = "RoundFailed"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ARTIFACT = re.compile(r"^/artifacts/round-[0-9]{3,}\.model$")


@dataclass(frozen=True)
class RoundModel:
    """The global model of a round that succeeded, and what the round's silos trained on and spent."""

    name: str
    uid: str
    artifact: str  # path of the global model on the round's artifacts volume (its aggregator's /artifacts)
    digest: str  # sha256 of that file, as the aggregator reported it on writing it
    sources: tuple[str, ...]  # the silos' training data: a public evaluation must be kept apart from each
    epsilon: float  # ε each silo spent over all rounds (its claim)
    delta: float
    rounds: int  # the round's spec.rounds: its final global model is bound to its uid and this number

    @property
    def pvc(self) -> str:
        return round_children.pvc_name(self.name)

    @property
    def data_key_secret(self) -> str:
        return round_children.data_key_secret_name(self.name)


@dataclass(frozen=True)
class RoundProblem:
    """Why the model has no round model to serve: ``reason`` is one of the constants above."""

    reason: str
    message: str

    @property
    def stalled(self) -> bool:
        """A running round progresses by itself; a missing or failed one needs someone to act (kstatus Stalled)."""
        return self.reason != WAITING_FOR_ROUND


def round_entry(uid: str, spec: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the index keeps of a FederatedRound: its uid, spec, phase and Ready message (for display)."""
    ready = next((c for c in (status or {}).get("conditions") or () if c.get("type") == "Ready"), {})
    return {"uid": uid, "spec": dict(spec), "phase": (status or {}).get("phase"), "message": ready.get("message", "")}


def resolve(name: str, entry: Mapping[str, Any] | None, results: Mapping[str, Any] | None) -> RoundModel | RoundProblem:
    """The global model of the round ``name`` (its index ``entry`` and its results ConfigMap), or why there is none."""
    if entry is None:
        return RoundProblem(ROUND_NOT_FOUND, f"FederatedRound {name} does not exist in this namespace; the model "
                            "serves its global model once it does and has succeeded")  # fmt: skip
    text = ((results or {}).get("data") or {}).get(AGGREGATOR_RESULT)
    try:
        result = json.loads(text) if text else None
    except ValueError:
        result = None
    status = (result or {}).get("status") if isinstance(result, dict) else None
    if status in (None, "Running"):
        if entry.get("phase") == "Failed":
            return RoundProblem(ROUND_FAILED, f"FederatedRound {name} failed: {entry.get('message') or 'no global model'}")
        return RoundProblem(WAITING_FOR_ROUND, f"FederatedRound {name} has not finished yet")
    assert isinstance(result, dict)
    artifact, digest = str(result.get("artifact") or ""), str(result.get("digest") or "")
    if status != "Succeeded":
        return RoundProblem(ROUND_FAILED, f"FederatedRound {name} did not succeed: {result.get('error') or status}")
    if not _ARTIFACT.match(artifact) or not _DIGEST.match(digest):
        return RoundProblem(ROUND_FAILED, f"FederatedRound {name} reported no valid global model "
                            f"(artifact {artifact!r}, digest {digest!r})")  # fmt: skip
    spec = entry.get("spec") or {}
    privacy = spec.get("privacy") or {}
    return RoundModel(
        name=name,
        uid=str(entry["uid"]),
        artifact=artifact,
        digest=digest,
        sources=tuple(str(c["data"]["source"]) for c in spec.get("clients") or ()),
        epsilon=float(privacy.get("epsilon", 0.0)),
        delta=float(privacy.get("delta", 1.0e-5)),
        rounds=int(spec.get("rounds") or 1),
    )


def privacy_fields(found: RoundModel) -> dict[str, Any]:
    """``status.privacy`` of a model serving ``found``: no claim of its own; the round's silos paid."""
    return {
        "federatedRound": found.name,
        "delta": found.delta,
        "note": f"no claim: trained by FederatedRound {found.name}, whose silos each spent at most ε={found.epsilon:g} "
                f"(δ={found.delta:g}) of their own budgets; see its status.participants",
    }  # fmt: skip


def round_privacy(name: str) -> dict[str, Any]:
    """``status.privacy`` of a model whose round's model is compressed but whose round is gone or changed."""
    return {"federatedRound": name, "delta": None,
            "note": f"no claim: trained by FederatedRound {name}, whose silos paid (its status.participants said how "
                    "much while it existed)"}  # fmt: skip
