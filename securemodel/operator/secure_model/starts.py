"""The weights a fine-tuning starts from (``spec.model.from``), and the train pod's part of reading them (pure).

A SecureModel source gives its trained (fp32) artifact of the version it serves (the training
version on its serving Deployment), bound to its uid and that training version, with the digest
its train pod reported; a FederatedRound gives its final global model (:mod:`.rounds`), bound to
the round's uid and ``spec.rounds``, with the digest its aggregator reported; a file is a
plain state_dict on a claim, which the user declares public. The train pod authenticates an
artifact under its source's data key, binding and digest before it reads any training data, so
the only weights it can start from are the source's. What a source was trained on was paid for
by its own budget (or declared public): starting from it is post-processing, and this training's
claim covers only what it reads of ``spec.data``.

A public SecureModel (``spec.privacy.public``) was trained WITHOUT differential privacy, so its
weights are only as public as its data. It is a starting point only while no PrivacyBudget of its
namespace protects any of that data (:func:`public_source`): a budget that comes to cover it after
the training keeps the model from being fine-tuned (in its namespace, the only one that can name it),
so no model whose privacy is stated against that budget starts from a non-private function of the
budget's data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from securemodel.data.sources import PvcSource, parse_source
from securemodel.operator.secure_model import children
from securemodel.operator.secure_model.children import InitParts
from securemodel.operator.secure_model.rounds import RoundModel, RoundProblem
from securemodel.operator.secure_model.spec import FineTuneSpec, StartSpec, parse
from securemodel.workers.arguments import model_binding, round_binding

SOURCE_NOT_FOUND: Final = "SourceNotFound"
SOURCE_NOT_READY: Final = "SourceNotReady"
SOURCE_INVALID: Final = "SourceInvalid"
SOURCE_PROTECTED: Final = "SourceDataProtected"

INIT_DIR: Final = "/init"  # the source's volume, read-only
INIT_KEY_DIR: Final = "/var/run/securemodel/init-key"
ARTIFACTS_DIR: Final = "/artifacts"  # where every writer of an artifact mounts its volume


@dataclass(frozen=True)
class InitArtifact:
    """An encrypted artifact to start from: where it lies, under which key, binding and digest."""

    claim: str  # the PVC holding it
    path: str  # its path as its writer wrote it (under /artifacts)
    key_secret: str  # the Secret holding its data key (key data.key)
    binding: str  # canonical JSON of the binding fields it was written for
    digest: str
    describe: str


@dataclass(frozen=True)
class InitFile:
    """A plain public state_dict on a claim of the namespace."""

    claim: str
    path: str  # inside the claim


@dataclass(frozen=True)
class InitProblem:
    """Why the starting weights are not available (yet)."""

    reason: str
    message: str


Start = InitArtifact | InitFile | InitProblem


def from_secure_model(model: str, name: str, uid: str | None, deployment: Mapping[str, Any] | None,
                      results: Mapping[str, Any] | None) -> Start:  # fmt: skip
    """The trained artifact of the SecureModel ``name`` (uid, serving Deployment and results ConfigMap) that
    the model ``model`` fine-tunes."""
    from securemodel.operator.secure_model import children  # children builds the train Job from this module

    if name == model:
        return InitProblem(SOURCE_INVALID, "spec.model.from.secureModelRef names this model itself")
    if uid is None:
        return InitProblem(SOURCE_NOT_FOUND, f"SecureModel {name} does not exist in this namespace")
    labels = ((deployment or {}).get("metadata") or {}).get("labels") or {}
    training = labels.get(children.TRAINING_LABEL)
    if not training:
        return InitProblem(SOURCE_NOT_READY, f"SecureModel {name} serves no version yet; training starts from the "
                           "trained model of the version it serves")  # fmt: skip
    text = ((results or {}).get("data") or {}).get(f"train-{training}")
    try:
        result = json.loads(text) if text else {}
    except ValueError:
        result = {}
    digest = str(result.get("digest") or "") if result.get("status") == "Succeeded" else ""
    if not digest.startswith("sha256:"):
        return InitProblem(SOURCE_NOT_READY, f"SecureModel {name}: the report of its training {training} is not "
                           "available, so its trained artifact cannot be authenticated")  # fmt: skip
    binding = _canonical(model_binding(uid, training, "fp32"))
    return InitArtifact(children.pvc_name(name), children.trained_artifact(training),
                        children.data_key_secret_name(name), binding, digest,
                        f"SecureModel {name}'s trained model of version {training}")  # fmt: skip


def source_entry(uid: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a model starting from the SecureModel ``uid`` with ``spec`` needs of it besides its children: its uid,
    and for a public one the data it trains on (``public``, else None) and its spec's training version."""
    parsed = parse(spec)
    public = parsed.data.source if parsed.public and parsed.data is not None else None
    return {"uid": uid, "public": public, "training": parsed.versions.training if public is not None else None}


def public_source(name: str, entry: Mapping[str, Any], served: str, unrecorded: tuple[str, ...],
                  protecting: tuple[str, ...]) -> InitProblem | None:  # fmt: skip
    """Why the public SecureModel ``name`` (its :func:`source_entry`), serving training version ``served``, may not
    be a starting point now; None if it may.

    Only the version of its spec's current data is checked (``served`` must be its spec's training version: the
    data of a version trained before the spec changed is not known here); its data must be protected by no budget
    of the namespace (``protecting``), all of whose specs are known (``unrecorded`` empty).
    """
    if unrecorded:
        return InitProblem(SOURCE_NOT_READY, f"SecureModel {name} is public and the spec of PrivacyBudget "
                           f"{', '.join(unrecorded)} is not observed yet, so its data cannot be checked")  # fmt: skip
    if served != entry["training"]:
        return InitProblem(SOURCE_NOT_READY, f"SecureModel {name} is public and serves version {served}, not its "
                           "spec's: only a version trained on the data its spec names can be checked")  # fmt: skip
    if protecting:
        return InitProblem(SOURCE_PROTECTED, f"SecureModel {name} was trained without differential privacy on "
                           f"{entry['public']}, which PrivacyBudget {', '.join(protecting)} now protects: it can no "
                           "longer start a training")  # fmt: skip
    return None


def from_round(found: RoundModel | RoundProblem) -> Start:
    """The final global model of a FederatedRound (see :func:`.rounds.resolve`): bound to its uid and
    ``spec.rounds``, so an earlier round's model of the same run is refused."""
    if isinstance(found, RoundProblem):
        return InitProblem(found.reason, found.message)
    binding = _canonical(round_binding(found.uid, found.rounds))
    return InitArtifact(found.pvc, found.artifact, found.data_key_secret, binding, found.digest,
                        f"FederatedRound {found.name}'s global model after {found.rounds} round(s)")  # fmt: skip


def from_file(source: str) -> Start:
    parsed = parse_source(source)
    assert isinstance(parsed, PvcSource), "spec.model.from.file is a pvc:// path (the CRD's pattern)"
    return InitFile(parsed.claim, parsed.path)


def train_parts(start: InitArtifact | InitFile, fine_tune: FineTuneSpec | None) -> InitParts:
    """The train worker's flags for ``start`` and ``fine_tune``, with the source's claim mounted read-only at
    :data:`INIT_DIR` and, for an artifact, its key Secret at :data:`INIT_KEY_DIR`."""
    volumes: list[dict[str, Any]] = [{"name": "init", "persistentVolumeClaim": {"claimName": start.claim, "readOnly": True}}]
    mounts: list[dict[str, Any]] = [{"name": "init", "mountPath": INIT_DIR, "readOnly": True}]
    if isinstance(start, InitArtifact):
        args = ["--init-artifact", INIT_DIR + start.path.removeprefix(ARTIFACTS_DIR),
                "--init-key-file", f"{INIT_KEY_DIR}/{children.DATA_KEY}", "--init-binding", start.binding,
                "--init-digest", start.digest]  # fmt: skip
        volumes.append({"name": "init-key", "secret": {"secretName": start.key_secret, "defaultMode": 0o440}})
        mounts.append({"name": "init-key", "mountPath": INIT_KEY_DIR, "readOnly": True})
    else:
        args = ["--init-file", f"{INIT_DIR}/{start.path}"]
    if fine_tune is not None and fine_tune.freeze:
        args += ["--freeze", ",".join(fine_tune.freeze)]
    if fine_tune is not None and fine_tune.lora is not None:
        lora = fine_tune.lora
        args += ["--lora-rank", str(lora.rank), "--lora-alpha", repr(lora.alpha), "--lora-targets", ",".join(lora.targets)]
    return InitParts(tuple(args), tuple(volumes), tuple(mounts))


def _canonical(binding: Mapping[str, str]) -> str:
    """A binding as the train pod's ``--init-binding`` takes it: compact JSON with sorted keys."""
    return json.dumps(binding, sort_keys=True, separators=(",", ":"))


def describe(spec: StartSpec) -> str:
    """The source in words, for conditions."""
    if spec.secure_model_ref:
        return f"SecureModel {spec.secure_model_ref}"
    if spec.federated_round_ref:
        return f"FederatedRound {spec.federated_round_ref}"
    return str(spec.file)
