"""A SecureModel's spec, parsed once into typed values, and the versions it hashes to (pure).

:func:`parse` fills in every default the CRD declares, so a spec that sets a field to its
default and one that omits it are equal. :class:`Versions` hashes a canonical form that
leaves out every field at its default: a later CRD that adds a defaulted field therefore
changes no existing model's version, claim or serving.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from securemodel.data.sources import Evaluation

# Bumped only when the meaning of a hashed field changes on purpose (every model then trains anew).
# 2: a source is trained on whole (no validation split) and artifacts are bound to uid and versions.
CANONICAL_FORM_VERSION: Final = 2


def _canonical(value: Any) -> Any:
    """A dataclass as a dict of its non-default fields (nested), anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            current = getattr(value, item.name)
            if item.default is not dataclasses.MISSING and current == item.default:
                continue
            if item.default_factory is not dataclasses.MISSING and current == item.default_factory():
                continue
            out[item.name] = _canonical(current)
        return out
    if isinstance(value, tuple):
        return [_canonical(item) for item in value]
    return value


def digest(*parts: Any) -> str:
    """``v`` + 8 hex digits of the SHA-256 of the canonical JSON of ``parts``."""
    canonical = json.dumps(
        [CANONICAL_FORM_VERSION, *(_canonical(part) for part in parts)], sort_keys=True, separators=(",", ":")
    )
    return "v" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class StartSpec:
    """``spec.model.from``: exactly one of the three (a CEL rule)."""

    secure_model_ref: str | None = None
    federated_round_ref: str | None = None
    file: str | None = None  # pvc://<claim>/<path> of a public torch state_dict


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    targets: tuple[str, ...]


@dataclass(frozen=True)
class FineTuneSpec:
    """``spec.model.fineTune``: parameter-name prefixes held fixed, and LoRA adapters."""

    freeze: tuple[str, ...] = ()
    lora: LoraSpec | None = None


@dataclass(frozen=True)
class ModelSpec:
    architecture: str | None = None
    entrypoint: str | None = None
    image: str | None = None
    params: str = "{}"  # canonical JSON of the builder's keyword arguments
    from_round: str | None = None  # spec.model.fromRound: a FederatedRound's global model, served without training
    start: StartSpec | None = None  # spec.model.from: the weights training starts from
    fine_tune: FineTuneSpec | None = None

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.params))


@dataclass(frozen=True)
class DataSpec:
    source: str
    samples: int | None = None
    schema: str = ""  # canonical JSON of spec.data.schema ("" when absent)
    masking: str = ""  # canonical JSON of spec.data.masking ("" when absent)


@dataclass(frozen=True)
class PrivacySpec:
    budget_ref: str
    epsilon: float
    delta: float = 1.0e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"


@dataclass(frozen=True)
class PublicSpec:
    """``spec.privacy: {public: true}``: training without differential privacy on data the user declares public
    (the operator checks that no budget of the namespace covers it). It has no field to set: its canonical form
    is ``{}``, which no budget form (it always has budgetRef and epsilon) hashes like."""


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    seed: int = 0


@dataclass(frozen=True)
class CompressionSpec:
    sparsity: float = 0.0
    quantization: str = "none"


@dataclass(frozen=True)
class ServingSpec:
    replicas: int = 1
    clients: tuple[str, ...] = ()
    certificate_lifetime: str = "720h"


@dataclass(frozen=True)
class ResourcesSpec:
    gpus: int = 0
    cpu: str = "1"
    memory: str = "2Gi"


@dataclass(frozen=True)
class Versions:
    """``training`` hashes what the trained artifact depends on (model, data, training, privacy):
    one claim and one train Job each. ``version`` adds compression: one compress Job each.
    Serving and resources change neither."""

    training: str
    version: str


@dataclass(frozen=True)
class ModelSpecs:
    """The whole spec of a SecureModel, defaults filled in. ``evaluation`` is ``spec.data.evaluation``, the
    source the user declared public: the compress Job measures accuracy on it, so it is part of ``version``
    (not of ``training``: changing it compresses again and claims nothing).

    ``data`` and ``privacy`` are None only with ``model.from_round`` (CEL rules): such a model trains nothing,
    and its ``training`` version hashes the model alone (the round it serves). ``privacy`` is a
    :class:`PublicSpec` for a model trained without differential privacy (``spec.privacy.public``)."""

    model: ModelSpec
    data: DataSpec | None
    privacy: PrivacySpec | PublicSpec | None
    training: TrainingSpec = field(default_factory=TrainingSpec)
    compression: CompressionSpec = field(default_factory=CompressionSpec)
    serving: ServingSpec = field(default_factory=ServingSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    evaluation: Evaluation | None = None

    @property
    def public(self) -> bool:
        """Whether the model trains without differential privacy (``spec.privacy: {public: true}``)."""
        return isinstance(self.privacy, PublicSpec)

    @property
    def versions(self) -> Versions:
        trained: tuple[Any, ...] = (self.model,)
        if self.model.from_round is None:
            trained = (self.model, self.data, self.training, self.privacy)
        compressed = (*trained, self.compression, *((self.evaluation,) if self.evaluation is not None else ()))
        return Versions(digest(*trained), digest(*compressed))


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else ""


def _client_name(entry: Any) -> str:
    return str(entry["name"]) if isinstance(entry, Mapping) else str(entry)


def parse(spec: Mapping[str, Any]) -> ModelSpecs:
    """The typed spec, with the CRD's defaults for every field the stored object leaves out.

    Raises:
        KeyError: if a required field is missing (the CRD schema makes that impossible in the cluster).
    """
    model = spec["model"]
    data = spec.get("data")
    privacy = spec.get("privacy")
    training = spec.get("training") or {}
    compression = spec.get("compression") or {}
    serving = spec.get("serving") or {}
    resources = spec.get("resources") or {}
    return ModelSpecs(
        model=ModelSpec(
            architecture=model.get("architecture"),
            entrypoint=model.get("entrypoint"),
            image=model.get("image"),
            params=json.dumps(model.get("params") or {}, sort_keys=True, separators=(",", ":")),
            from_round=str(model["fromRound"]) if model.get("fromRound") else None,
            start=_start(model.get("from")),
            fine_tune=_fine_tune(model.get("fineTune")),
        ),
        data=DataSpec(
            source=str(data["source"]),
            samples=int(data["samples"]) if data.get("samples") is not None else None,
            schema=_canonical_json(data.get("schema")),
            masking=_canonical_json(data.get("masking")),
        ) if data else None,
        privacy=_privacy(privacy),
        training=TrainingSpec(
            epochs=int(training.get("epochs", TrainingSpec.epochs)),
            batch_size=int(training.get("batchSize", TrainingSpec.batch_size)),
            learning_rate=float(training.get("learningRate", TrainingSpec.learning_rate)),
            optimizer=str(training.get("optimizer", TrainingSpec.optimizer)),
            seed=int(training.get("seed", TrainingSpec.seed)),
        ),
        compression=CompressionSpec(
            sparsity=float((compression.get("pruning") or {}).get("sparsity", CompressionSpec.sparsity)),
            quantization=str(compression.get("quantization", CompressionSpec.quantization)),
        ),
        serving=ServingSpec(
            replicas=int(serving.get("replicas", ServingSpec.replicas)),
            clients=tuple(_client_name(entry) for entry in serving.get("clients") or ()),
            certificate_lifetime=str(serving.get("certificateLifetime", ServingSpec.certificate_lifetime)),
        ),
        resources=ResourcesSpec(
            gpus=int(resources.get("gpus", ResourcesSpec.gpus)),
            cpu=str(resources.get("cpu", ResourcesSpec.cpu)),
            memory=str(resources.get("memory", ResourcesSpec.memory)),
        ),
        evaluation=_evaluation((data or {}).get("evaluation")),
    )


def _privacy(privacy: Mapping[str, Any] | None) -> PrivacySpec | PublicSpec | None:
    if not privacy:
        return None
    if privacy.get("public"):
        return PublicSpec()
    return PrivacySpec(
        budget_ref=str(privacy["budgetRef"]),
        epsilon=float(privacy["epsilon"]),
        delta=float(privacy.get("delta", PrivacySpec.delta)),
        max_grad_norm=float(privacy.get("maxGradNorm", PrivacySpec.max_grad_norm)),
        accountant=str(privacy.get("accountant", PrivacySpec.accountant)),
    )


def _evaluation(evaluation: Mapping[str, Any] | None) -> Evaluation | None:
    if not evaluation:
        return None
    samples = evaluation.get("samples")
    return Evaluation(str(evaluation["source"]), int(samples) if samples is not None else None)


def _start(start: Mapping[str, Any] | None) -> StartSpec | None:
    if not start:
        return None
    return StartSpec(secure_model_ref=start.get("secureModelRef"), federated_round_ref=start.get("federatedRoundRef"),
                     file=start.get("file"))  # fmt: skip


def _fine_tune(fine_tune: Mapping[str, Any] | None) -> FineTuneSpec | None:
    if not fine_tune:
        return None
    lora = fine_tune.get("lora")
    return FineTuneSpec(
        freeze=tuple(sorted(str(p) for p in fine_tune.get("freeze") or ())),
        lora=LoraSpec(int(lora["rank"]), float(lora["alpha"]), tuple(sorted(str(t) for t in lora["targetModules"])))
        if lora else None,
    )  # fmt: skip
