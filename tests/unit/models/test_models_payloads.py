"""Model payloads: both encodings load as predictors, preprocessing travels with the model, bad bytes are refused."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import torch

from securemodel.compression import compress_state
from securemodel.data.encoding import TableEncoding
from securemodel.data.loading import Standardization
from securemodel.data.masking import Masking
from securemodel.data.tables import TableSchema
from securemodel.models import (
    ModelRecord,
    ModelSpec,
    PayloadError,
    build_model,
    dump_compressed,
    dump_fp32,
    load_predictor,
    load_record,
)
from securemodel.models.container import pack

torch.set_num_threads(1)  # the unit tests share two cores with everything else

RNG = np.random.default_rng(7)


def make_record(spec: ModelSpec, input_shape: tuple[int, ...], *, standardized: bool = True) -> ModelRecord:
    torch.manual_seed(0)
    module = build_model(spec, input_shape, 3)
    mean, scale = RNG.normal(size=input_shape), RNG.uniform(0.5, 2, input_shape)
    standardization = Standardization(mean.astype(np.float32), scale.astype(np.float32)) if standardized else None
    return ModelRecord.from_module(spec, module, input_shape, 3, standardization, info={"data": {"seed": 1}})


def reference_proba(record: ModelRecord, x: np.ndarray) -> np.ndarray:
    """What the model computes: softmax of the network applied to standardized inputs."""
    inputs = record.standardization.apply(x) if record.standardization is not None else x
    with torch.no_grad():
        return torch.softmax(record.build()(torch.from_numpy(inputs)), dim=1).numpy()


@pytest.mark.parametrize(
    ("spec", "input_shape"),
    [(ModelSpec("mlp", params={"hidden": [16, 8]}), (30,)), (ModelSpec("cnn", params={"channels": [4, 8]}), (8, 8))],
    ids=["mlp", "cnn"],
)
def test_fp32_payload_round_trips_to_the_same_predictions(spec: ModelSpec, input_shape: tuple[int, ...]) -> None:
    record = make_record(spec, input_shape)
    x = RNG.normal(size=(6, *input_shape)).astype(np.float32)

    predictor = load_predictor(dump_fp32(record), "tumours")

    assert (predictor.name, predictor.input_shape, predictor.num_classes) == ("tumours", input_shape, 3)
    proba = predictor.predict_proba(x)
    assert proba.dtype == np.float32 and proba.shape == (6, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba, reference_proba(record, x).astype(np.float32))
    assert load_record(dump_fp32(record)).info == {"data": {"seed": 1}}


def test_standardization_is_applied_inside_the_predictor() -> None:
    standardized = make_record(ModelSpec("mlp", params={"hidden": [8]}), (5,))
    raw = ModelRecord(standardized.spec, (5,), 3, standardized.state, None)
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    assert standardized.standardization is not None

    with_stats = load_predictor(dump_fp32(standardized), "m").predict_proba(x)
    without = load_predictor(dump_fp32(raw), "m").predict_proba(standardized.standardization.apply(x))

    np.testing.assert_allclose(with_stats, without, rtol=1e-6)


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_compressed_payload_loads_and_predicts_close_to_fp32(sparsity: float) -> None:
    record = make_record(ModelSpec("cnn", params={"channels": [4, 8]}), (8, 8))
    x = RNG.normal(size=(32, 8, 8)).astype(np.float32)

    predictor = load_predictor(dump_compressed(record, compress_state(record.state, sparsity, "int8")), "small")

    assert (predictor.input_shape, predictor.num_classes, predictor.encoding) == ((8, 8), 3, "compressed")
    proba = predictor.predict_proba(x)
    assert proba.dtype == np.float32 and proba.shape == (32, 3)
    if sparsity == 0:  # int8 alone: per-channel rounding error only
        np.testing.assert_allclose(proba, reference_proba(record, x), atol=0.02)


def test_predictor_rejects_inputs_of_the_wrong_shape() -> None:
    predictor = load_predictor(dump_fp32(make_record(ModelSpec("mlp"), (30,))), "m")
    with pytest.raises(ValueError, match=r"takes inputs of shape \(batch, 30\), got \(2, 29\)"):
        predictor.predict_proba(np.zeros((2, 29), dtype=np.float32))


def test_payload_holds_no_pickle_and_corrupt_bytes_are_refused() -> None:
    payload = dump_fp32(make_record(ModelSpec("mlp", params={"hidden": [4]}), (3,)))
    assert b"\x80\x04\x95" not in payload and b"torch" not in payload  # no pickle protocol frames

    for bad in (payload[:20], payload[: len(payload) - 8], b"PK\x03\x04" + payload[4:], b""):
        with pytest.raises(PayloadError):
            load_record(bad)


def test_object_arrays_cannot_be_smuggled_in() -> None:
    header = json.dumps({"meta": {}, "arrays": [["x", "|O", [1], 0, 8]]}).encode()
    forged = b"SMDL" + struct.pack("<BI", 1, len(header)) + header + bytes(8)
    with pytest.raises(PayloadError, match=re.escape("dtype '|O' is not allowed")):
        load_record(forged)


def test_weights_that_do_not_fit_the_architecture_are_refused() -> None:
    record = make_record(ModelSpec("mlp", params={"hidden": [4]}), (3,), standardized=False)
    meta = {
        "format": "securemodel.model",
        "encoding": "fp32",
        "model": {"architecture": "mlp", "params": {"hidden": [5]}},
        "inputShape": [3],
        "numClasses": 3,
        "standardized": False,
        "info": {},
    }
    payload = pack(meta, {f"state/{k}": v for k, v in record.state.items()})
    with pytest.raises(ValueError, match="stored weights do not fit the built model"):
        load_predictor(payload, "m")



def test_a_table_models_encoding_travels_in_both_payloads_and_must_fit_the_model() -> None:
    schema = TableSchema.from_spec(
        {
            "label": {"column": "outcome", "classes": ["no", "yes"]},
            "features": [
                {"name": "age", "type": "numeric", "min": 0, "max": 100},
                {"name": "postcode", "type": "categorical", "categories": ["SW1", "EC1"]},
            ],
        }
    )
    masking = Masking.from_spec({"drop": ["name"], "generalize": [{"column": "postcode", "prefix": 3}]})
    table = TableEncoding.of(schema, masking)
    spec = ModelSpec("mlp", params={"hidden": [4]})
    torch.manual_seed(0)
    record = ModelRecord.from_module(spec, build_model(spec, (3,), 2), (3,), 2, None, table=table)
    for payload in (dump_fp32(record), dump_compressed(record, compress_state(record.state, 0.5, "int8"))):
        assert load_record(payload).table == table
        assert load_predictor(payload, "m").table == table
    assert load_record(dump_fp32(make_record(spec, (3,)))).table is None

    wider = ModelRecord.from_module(spec, build_model(spec, (4,), 2), (4,), 2, None)
    meta = {"format": "securemodel.model", "encoding": "fp32", "model": spec.to_json(), "inputShape": [4],
            "numClasses": 2, "standardized": False, "info": {}, "table": table.to_json()}  # fmt: skip
    with pytest.raises(PayloadError, match=re.escape("the table encoding makes 3 inputs; the model takes (4,)")):
        load_record(pack(meta, {f"state/{k}": v for k, v in wider.state.items()}))
