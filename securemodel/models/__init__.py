"""Models: built-in architectures and custom builders, their payloads, and predictors.

``load_predictor(payload, name)`` loads either payload the workers write (``fp32`` from
``train``, ``compressed`` from ``compress``; see :mod:`securemodel.models.serialization`).
"""

from securemodel.models.predictor import ModelPredictor, load_predictor
from securemodel.models.registry import ModelBuildError, ModelSpec, build_model, resolve_builder
from securemodel.models.serialization import (
    ARTIFACT_KIND,
    ModelRecord,
    PayloadError,
    dump_compressed,
    dump_fp32,
    load_record,
)

__all__ = [
    "ARTIFACT_KIND",
    "ModelBuildError",
    "ModelPredictor",
    "ModelRecord",
    "ModelSpec",
    "PayloadError",
    "build_model",
    "dump_compressed",
    "dump_fp32",
    "load_predictor",
    "load_record",
    "resolve_builder",
]
