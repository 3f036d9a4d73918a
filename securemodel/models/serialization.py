"""Model payloads: the plaintext bytes inside the encrypted artifacts.

Both payloads are :mod:`securemodel.models.container` files (JSON header + raw arrays; no
pickle, nothing executed on load). The header's ``meta`` is::

    {"format": "securemodel.model", "encoding": "fp32" | "compressed",
     "model": {"architecture" | "entrypoint": ..., "params": {...}},
     "inputShape": [...], "numClasses": C, "standardized": bool,
     "table": {...}             # a model trained on a table only: its TableEncoding (schema and
                                # generalizations, nothing secret), so it is served by column name
     "layout": {...}            # compressed only: see securemodel.compression.encoding
     "info": {...}}             # free JSON: data source, training / compression metadata

and the arrays are the module's ``state_dict`` (``state/<name>``; for ``fp32`` dense float32,
for ``compressed`` the encoded arrays) plus, when ``standardized``, ``pre/mean`` and
``pre/scale``, the input standardization the predictor applies before the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np
import torch
from torch import nn

from securemodel.compression import CompressedState, decompress_state
from securemodel.data.encoding import TableEncoding
from securemodel.data.loading import Standardization
from securemodel.models.container import ContainerError, pack, unpack
from securemodel.models.registry import ModelBuildError, ModelSpec, build_model

FORMAT: Final[str] = "securemodel.model"
# The kind (securemodel.crypto.artifacts) both payloads are encrypted under, the serve worker's
# default --artifact-kind. The binding's other fields (securemodel.workers.arguments.model_binding:
# uid, training, version, encoding) tell one model's artifacts apart.
ARTIFACT_KIND: Final[str] = "model"
Encoding = Literal["fp32", "compressed"]
_STATE = "state/"


class PayloadError(ValueError):
    """The bytes are not a model payload this version can read."""


@dataclass(frozen=True)
class ModelRecord:
    """A trained model as stored: how to build it, its weights as dense float32, its input preprocessing.

    ``table`` is the encoding of a model trained on a table: the served model takes its inputs by
    column name and encodes them with it, exactly as its training rows were.
    """

    spec: ModelSpec
    input_shape: tuple[int, ...]
    num_classes: int
    state: dict[str, np.ndarray]
    standardization: Standardization | None
    info: dict[str, Any] = field(default_factory=dict)
    encoding: Encoding = "fp32"
    table: TableEncoding | None = None

    @classmethod
    def from_module(
        cls,
        spec: ModelSpec,
        module: nn.Module,
        input_shape: tuple[int, ...],
        num_classes: int,
        standardization: Standardization | None,
        info: dict[str, Any] | None = None,
        table: TableEncoding | None = None,
    ) -> ModelRecord:
        """Snapshot ``module``'s state (copied to the CPU)."""
        state = {name: tensor.detach().cpu().numpy().copy() for name, tensor in module.state_dict().items()}
        return cls(spec, tuple(input_shape), num_classes, state, standardization, dict(info or {}), table=table)

    def with_info(self, **info: Any) -> ModelRecord:
        """A copy with ``info`` updated."""
        return replace(self, info={**self.info, **info})

    def build(self) -> nn.Module:
        """The module with this record's weights, in eval mode, on the CPU."""
        module = build_model(self.spec, self.input_shape, self.num_classes)
        tensors = {name: torch.from_numpy(np.array(array)) for name, array in self.state.items()}
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise ModelBuildError(f"{self.spec.label}: stored weights do not fit the built model: {err}") from err
        return module.eval()


def dump_fp32(record: ModelRecord) -> bytes:
    """The ``fp32`` payload: dense float32 weights."""
    arrays = {_STATE + name: _float32(array) for name, array in record.state.items()}
    return pack(_meta(record, "fp32"), {**arrays, **_preprocessing(record)})


def dump_compressed(record: ModelRecord, compressed: CompressedState) -> bytes:
    """The ``compressed`` payload: ``compressed`` (made from ``record.state``) in its encoded form."""
    meta = {**_meta(record, "compressed"), "layout": compressed.layout}
    arrays = {_STATE + name: array for name, array in compressed.arrays.items()}
    return pack(meta, {**arrays, **_preprocessing(record)})


def load_record(payload: bytes) -> ModelRecord:
    """Parse either payload; the state comes back dense float32 (compressed weights dequantized)."""
    try:
        meta, arrays = unpack(payload)
        if meta.get("format") != FORMAT:
            raise PayloadError(f"not a securemodel model payload (format {meta.get('format')!r})")
        encoding = meta["encoding"]
        stored = {name[len(_STATE) :]: array for name, array in arrays.items() if name.startswith(_STATE)}
        if encoding == "fp32":
            state = stored
        elif encoding == "compressed":
            state = decompress_state(meta["layout"], stored)
        else:
            raise PayloadError(f"unknown encoding {encoding!r}")
        standardization = Standardization(arrays["pre/mean"], arrays["pre/scale"]) if meta["standardized"] else None
        input_shape = tuple(int(d) for d in meta["inputShape"])
        table = TableEncoding.from_json(meta["table"]) if meta.get("table") is not None else None
        if table is not None and input_shape != (table.schema.input_width,):
            width = table.schema.input_width
            raise PayloadError(f"the table encoding makes {width} inputs; the model takes {input_shape}")
        return ModelRecord(
            spec=ModelSpec.from_json(meta["model"]),
            input_shape=input_shape,
            num_classes=int(meta["numClasses"]),
            state=state,
            standardization=standardization,
            info=dict(meta.get("info", {})),
            encoding=encoding,
            table=table,
        )
    except ContainerError as err:
        raise PayloadError(str(err)) from err
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, PayloadError | ModelBuildError):
            raise
        raise PayloadError(f"malformed model payload: {type(err).__name__}: {err}") from err


def _meta(record: ModelRecord, encoding: Encoding) -> dict[str, Any]:
    table = {"table": record.table.to_json()} if record.table is not None else {}
    return {
        "format": FORMAT,
        "encoding": encoding,
        "model": record.spec.to_json(),
        "inputShape": list(record.input_shape),
        "numClasses": record.num_classes,
        "standardized": record.standardization is not None,
        **table,
        "info": record.info,
    }


def _preprocessing(record: ModelRecord) -> Mapping[str, np.ndarray]:
    if record.standardization is None:
        return {}
    return {"pre/mean": _float32(record.standardization.mean), "pre/scale": _float32(record.standardization.scale)}


def _float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array
