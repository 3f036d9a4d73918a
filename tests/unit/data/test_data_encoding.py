"""Inputs by column name (OIP v2, one tensor per column) get exactly the masking and encoding training saw."""

import json
from pathlib import Path

import numpy as np
import pytest

from securemodel.data.encoding import RequestError, TableEncoding
from securemodel.data.loading import load_dataset
from securemodel.data.masking import Masking
from securemodel.data.tables import TableSchema

SCHEMA = TableSchema.from_spec(
    {
        "label": {"column": "outcome", "classes": ["healthy", "sick"]},
        "features": [
            {"name": "age", "type": "numeric", "min": 0, "max": 100},
            {"name": "born", "type": "numeric", "min": 1900, "max": 2030},
            {"name": "postcode", "type": "categorical", "categories": ["SW1", "EC1"]},
        ],
    }
)
MASKING = Masking.from_spec(
    {
        "drop": ["name"],
        "generalize": [
            {"column": "born", "date": "year"},
            {"column": "postcode", "prefix": 3},
            {"column": "age", "bandWidth": 5},
        ],
    }
)
ENCODING = TableEncoding.of(SCHEMA, MASKING)
REQUEST = {"age": [47.0, 3], "born": ["1978-06-01", "2021-01-30"], "postcode": ["SW1A 1AA", "ec1v 9nr"]}


def test_a_request_by_name_is_encoded_like_the_training_rows(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    (tmp_path / "t.csv").write_text(
        "name,age,born,postcode,outcome\nAda Lovelace,47,1978-06-01,SW1A 1AA,sick\nAlan Turing,3,2021-01-30,ec1v 9nr,healthy\n"
    )
    data = load_dataset("pvc://c/t.csv", data_root=tmp_path, samples=2, schema=SCHEMA,
                        masking=MASKING)  # fmt: skip
    assert data.encoding == ENCODING
    served = ENCODING.encode_request(REQUEST)
    assert {bytes(row) for row in served} == {bytes(row) for row in data.x_train}
    assert np.allclose(served[0], [2 * 45 / 100 - 1, 2 * 78 / 130 - 1, 1, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ["Ada"]}, "unexpected input 'name'"),
        ({"age": None}, "missing input 'age'"),
        ({"age": [1.0]}, r"same number of rows; got lengths \[1, 2\]"),
        ({"postcode": ["SW1", "N1 9GU"]}, "column 'postcode', row 2: not one of the 2 declared categories"),
        ({"born": ["1978-06-01", "yesterday"]}, "column 'born', row 2: not an ISO 8601 date"),
        ({"age": [1, "x"]}, "column 'age', row 2: not a number"),
    ],
)
def test_requests_that_do_not_fit_are_refused_by_name(change: dict, message: str) -> None:
    request = {**REQUEST, **change}
    request = {k: v for k, v in request.items() if v is not None}
    with pytest.raises(RequestError, match=message):
        ENCODING.encode_request(request)


def test_numpy_and_bytes_free_values_are_accepted() -> None:
    request = {**REQUEST, "age": np.array([47.0, 3.0], dtype=np.float32)}
    assert np.array_equal(ENCODING.encode_request(request), ENCODING.encode_request(REQUEST))


def test_the_encoding_survives_json_for_the_model_payload() -> None:
    again = TableEncoding.from_json(json.loads(json.dumps(ENCODING.to_json())))
    assert again == ENCODING
    assert np.array_equal(again.encode_request(REQUEST), ENCODING.encode_request(REQUEST))
    assert [rule["column"] for rule in ENCODING.to_json()["generalize"]] == ["born", "postcode", "age"]
    assert '"drop"' not in json.dumps(ENCODING.to_json()), "only the feature columns' rules are kept"


def test_inputs_metadata_names_each_column() -> None:
    assert ENCODING.columns == ("age", "born", "postcode")
    assert ENCODING.classes == ("healthy", "sick")
    assert ENCODING.inputs_metadata() == [
        {"name": "age", "datatype": "FP32", "shape": [-1]},
        {"name": "born", "datatype": "BYTES", "shape": [-1]},
        {"name": "postcode", "datatype": "BYTES", "shape": [-1]},
    ]
