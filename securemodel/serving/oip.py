"""The Open Inference Protocol v2 (KServe / Triton "v2" REST) for one classifier: JSON in, JSON out.

A model has one input tensor, ``input`` (``[batch, *input_shape]``), and two outputs,
``probabilities`` (FP32 ``[batch, num_classes]``) and ``predicted_class`` (INT64 ``[batch]``).
A model trained on a table instead takes one tensor per feature column, named for the column
(shape ``[batch]`` or ``[batch, 1]``; BYTES, or a numeric datatype, as KServe's tabular examples
send them), and the batch is its table encoding (:meth:`securemodel.data.encoding.TableEncoding.encode_request`:
the masking's generalizations, then the schema's encoding, the code training ran).

Every request is validated before the model sees it; a malformed one is an ``OipError`` carrying
the HTTP status and the message of the protocol's ``{"error": "..."}`` body. No message quotes
a value of the request (a cell may be an identifier); they name columns and rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from securemodel.data.encoding import RequestError, TableEncoding
from securemodel.serving.predictor import Predictor

INPUT = "input"
PROBABILITIES = "probabilities"
PREDICTED_CLASS = "predicted_class"
OUTPUTS = (PROBABILITIES, PREDICTED_CLASS)
PLATFORM = "securemodel"

# The numeric tensor datatypes of the protocol that a classifier input can be given in.
DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
    }.items()
}


class OipError(Exception):
    """A request the protocol answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    """A validated inference request."""

    id: str | None
    batch: np.ndarray
    """float32 ``(batch, *input_shape)``, all finite."""
    outputs: tuple[str, ...]


def server_metadata(version: str) -> dict[str, Any]:
    """The body of ``GET /v2``."""
    return {"name": "securemodel", "version": version, "extensions": []}


def model_metadata(predictor: Predictor, version: str | None = None) -> dict[str, Any]:
    """The body of ``GET /v2/models/<name>``; -1 marks the variable batch dimension.

    A table model lists its feature columns and their datatypes, all from its declared schema.
    """
    versions = {"versions": [version]} if version else {}
    if predictor.table is not None:
        inputs = predictor.table.inputs_metadata()
    else:
        inputs = [{"name": INPUT, "datatype": "FP32", "shape": [-1, *predictor.input_shape]}]
    return {
        "name": predictor.name,
        **versions,
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, predictor.num_classes]},
            {"name": PREDICTED_CLASS, "datatype": "INT64", "shape": [-1]},
        ],
    }


def parse_infer_request(body: Any, predictor: Predictor, *, max_batch: int) -> InferRequest:
    """Validate the body of ``POST /v2/models/<name>/infer`` against the model's input."""
    if not isinstance(body, dict):
        raise OipError(400, "the request body must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(400, "'id' must be a string")
    inputs = body.get("inputs")
    if predictor.table is not None:
        batch = _table_batch(inputs, predictor.table, max_batch)
    elif not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise OipError(400, f"'inputs' must be a list of one tensor, {INPUT!r}")
    else:
        batch = _input_batch(inputs[0], predictor.input_shape, max_batch)
    return InferRequest(id=request_id, batch=batch, outputs=_requested_outputs(body.get("outputs")))


def infer_response(
    predictor: Predictor, request: InferRequest, probabilities: np.ndarray, version: str | None = None
) -> dict[str, Any]:
    """The body of a successful inference (with ``model_version`` if known); a model output of the wrong shape is a 500."""
    batch = request.batch.shape[0]
    expected = (batch, predictor.num_classes)
    if probabilities.shape != expected:
        raise OipError(
            500, f"model {predictor.name!r} returned shape {list(probabilities.shape)}, expected {list(expected)}"
        )
    probabilities = probabilities.astype(np.float32, copy=False)
    if not np.isfinite(probabilities).all():
        raise OipError(500, f"model {predictor.name!r} returned non-finite probabilities")
    tensors = {
        PROBABILITIES: {
            "name": PROBABILITIES,
            "shape": list(expected),
            "datatype": "FP32",
            "data": probabilities.ravel().tolist(),
        },
        PREDICTED_CLASS: {
            "name": PREDICTED_CLASS,
            "shape": [batch],
            "datatype": "INT64",
            "data": probabilities.argmax(axis=1).tolist(),
        },
    }
    response: dict[str, Any] = {"model_name": predictor.name, "outputs": [tensors[name] for name in request.outputs]}
    if version:
        response["model_version"] = version
    if request.id is not None:
        response["id"] = request.id
    return response


def _input_batch(tensor: dict[str, Any], input_shape: tuple[int, ...], max_batch: int) -> np.ndarray:
    if tensor.get("name") != INPUT:
        raise OipError(400, f"unexpected input {tensor.get('name')!r}: the model has one input, {INPUT!r}")
    shape = tensor.get("shape")
    expected = f"[batch, {', '.join(map(str, input_shape))}]"
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or tuple(shape[1:]) != input_shape
    ):
        raise OipError(400, f"input shape {shape} does not match the model's {expected}")
    if not 1 <= shape[0] <= max_batch:
        raise OipError(400, f"batch size {shape[0]} is outside 1..{max_batch}")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise OipError(400, f"unsupported datatype {datatype!r}: use one of {', '.join(DATATYPES)}")
    values = _numbers(tensor.get("data"), DATATYPES[datatype], datatype)
    if values.size != math.prod(shape):
        raise OipError(400, f"input data has {values.size} elements, shape {shape} needs {math.prod(shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        batch = values.astype(DATATYPES[datatype]).astype(np.float32).reshape(shape)
    if not np.isfinite(batch).all():
        raise OipError(400, "input data contains NaN or infinite values, or values out of FP32 range")
    return batch


def _table_batch(inputs: Any, table: TableEncoding, max_batch: int) -> np.ndarray:
    """The encoded batch of one tensor per column; names are checked before any value is read."""
    if not isinstance(inputs, list) or not all(isinstance(tensor, dict) for tensor in inputs):
        raise OipError(400, f"'inputs' must be a list of tensors, one per column: {', '.join(table.columns)}")
    names: list[str] = []
    for tensor in inputs:
        name = tensor.get("name")
        if not isinstance(name, str):
            raise OipError(400, "every input needs a 'name': the column it holds")
        if name in names:
            raise OipError(400, f"input {name!r} is given twice")
        names.append(name)
    try:
        table.check_names(names)
        columns = {name: _column(tensor, name, max_batch) for name, tensor in zip(names, inputs, strict=True)}
        return table.encode_request(columns)
    except RequestError as err:
        raise OipError(400, str(err)) from None


def _column(tensor: dict[str, Any], name: str, max_batch: int) -> list[object]:
    """The cells of one column's tensor (shape ``[n]`` or ``[n, 1]``): strings (or null) for BYTES, else numbers."""
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or len(shape) not in (1, 2)
        or shape[1:] not in ([], [1])
    ):
        raise OipError(400, f"input {name!r}: shape {shape} is not [batch] or [batch, 1]")
    if not 1 <= shape[0] <= max_batch:
        raise OipError(400, f"input {name!r}: batch size {shape[0]} is outside 1..{max_batch}")
    datatype = tensor.get("datatype")
    data = tensor.get("data")
    if datatype == "BYTES":
        if not isinstance(data, list):
            raise OipError(400, f"input {name!r}: 'data' must be a JSON array")
        cells = [cell for item in data for cell in (item if isinstance(item, list) else [item])]
        if not all(cell is None or isinstance(cell, str) for cell in cells):
            raise OipError(400, f"input {name!r}: BYTES data must hold only strings")
    elif datatype in DATATYPES:
        try:
            # Not cast to the datatype: a number reaches the schema as training read it, in double precision.
            cells = _numbers(data, DATATYPES[datatype], datatype).ravel().tolist()
        except OipError as err:
            raise OipError(err.status, f"input {name!r}: {err.message}") from None
    else:
        choices = ", ".join(DATATYPES)
        raise OipError(400, f"input {name!r}: unsupported datatype {datatype!r}: use BYTES or one of {choices}")
    if len(cells) != shape[0]:
        raise OipError(400, f"input {name!r}: data has {len(cells)} elements, shape {shape} needs {shape[0]}")
    return cells


def _numbers(data: Any, dtype: np.dtype[Any], datatype: str) -> np.ndarray:
    """``data`` (a flat or nested JSON array of numbers) as a numpy array, checked against ``datatype``."""
    if not isinstance(data, list):
        raise OipError(400, "input 'data' must be a JSON array")
    try:
        values = np.asarray(data)
    except ValueError:
        raise OipError(400, "input 'data' is a ragged array") from None
    allowed = "iu" if dtype.kind in "iu" else "iuf"
    if values.size and values.dtype.kind not in allowed:
        kind = "integers" if dtype.kind in "iu" else "numbers"
        raise OipError(400, f"input 'data' must hold only {kind} for datatype {datatype}")
    if dtype.kind in "iu" and values.size:
        limits = np.iinfo(dtype)
        if int(values.min()) < limits.min or int(values.max()) > limits.max:
            raise OipError(400, f"input data is out of range for datatype {datatype}")
    return values


def _requested_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return OUTPUTS
    items = outputs if isinstance(outputs, list) and outputs else [None]
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if not all(name in OUTPUTS for name in names):
        raise OipError(400, f"'outputs' must name outputs of the model: {', '.join(OUTPUTS)}")
    return tuple(dict.fromkeys(str(name) for name in names))
