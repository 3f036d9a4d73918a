"""Tables from volumes: CSV and Parquet read by the declared schema, and rows that do not fit it refused."""

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from securemodel.data.loading import DataLoadError, load_dataset
from securemodel.data.masking import Masking
from securemodel.data.tables import SchemaError, TableSchema

pa = pytest.importorskip("pyarrow", reason="pyarrow is a worker dependency")
parquet = pytest.importorskip("pyarrow.parquet")

SPEC = {
    "label": {"column": "outcome", "classes": ["healthy", "sick"]},
    "features": [
        {"name": "age", "type": "numeric", "min": 0, "max": 100},
        {"name": "sex", "type": "categorical", "categories": ["F", "M", "X"]},
        {"name": "ward", "type": "categorical", "categories": ["1", "2"]},
    ],
}
SCHEMA = TableSchema.from_spec(SPEC)
HEADER = "id,age,sex,ward,outcome\n"
ROWS = ["007,50,F,1,healthy\n", "008,0,M,2,sick\n", "009,100,X,1,sick\n", "010,150,F,2,healthy\n", "011,-5,M,1,sick\n"]
DROP_ID = Masking(drop=("id",))


def load(root: Path, name: str, samples: int = 5, schema: TableSchema = SCHEMA, masking: Masking = DROP_ID):
    return load_dataset(
        f"pvc://claim/{name}", data_root=root, samples=samples, schema=schema,
        masking=masking,
    )  # fmt: skip


def by_row(data) -> dict[bytes, int]:
    return {bytes(x): int(y) for x, y in zip(data.x_train, data.y_train, strict=True)}


def test_schema_round_trips_and_gives_the_input_width() -> None:
    assert TableSchema.from_spec(SCHEMA.to_spec()) == SCHEMA
    assert SCHEMA.input_width == 1 + 3 + 2
    assert SCHEMA.label.classes == ("healthy", "sick")


def test_csv_and_parquet_encode_identically(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(HEADER + "".join(ROWS))
    table = pa.table(
        {
            "id": ["007", "008", "009", "010", "011"],
            "age": pa.array([50, 0, 100, 150, -5], pa.int32()),
            "sex": ["F", "M", "X", "F", "M"],
            "ward": pa.array([1, 2, 1, 2, 1], pa.int64()),  # integers compare as their text with categories
            "outcome": ["healthy", "sick", "sick", "healthy", "sick"],
        }
    )
    parquet.write_table(table, tmp_path / "t.parquet")
    csv, pq = load(tmp_path, "t.csv"), load(tmp_path, "t.parquet")
    assert csv.input_shape == (6,) and csv.num_classes == 2 and csv.standardization is None
    assert by_row(csv) == by_row(pq)
    rows = sorted(by_row(csv).items(), key=lambda item: item[0])
    encoded = {tuple(np.frombuffer(x, np.float32)): y for x, y in rows}
    assert encoded[(0.0, 1.0, 0.0, 0.0, 1.0, 0.0)] == 0  # age 50 -> 0, F, ward 1, healthy
    assert encoded[(1.0, 1.0, 0.0, 0.0, 0.0, 1.0)] == 0  # age 150 clipped to the bound 100 -> 1
    assert encoded[(-1.0, 0.0, 1.0, 0.0, 1.0, 0.0)] == 1  # age -5 clipped to 0 -> -1


def test_a_table_of_a_few_thousand_rows_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 5000
    table = pa.table(
        {
            "id": [f"P{i:06d}" for i in range(n)],
            "age": rng.uniform(0, 100, n),
            "sex": rng.choice(["F", "M", "X"], n),
            "ward": rng.choice(["1", "2"], n),
            "outcome": rng.choice(["healthy", "sick"], n),
        }
    )
    parquet.write_table(table, tmp_path / "big.parquet")
    data = load_dataset("pvc://c/big.parquet", data_root=tmp_path, samples=n,
                        schema=SCHEMA, masking=DROP_ID)  # fmt: skip
    assert (len(data.y_train), data.input_shape) == (5000, (6,))  # all of it: nothing is held out
    assert np.abs(data.x_train).max() <= 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("012,abc,F,1,sick\n", "column 'age', row 6: not a number"),
        ("012,,F,1,sick\n", "column 'age', row 6: missing value"),
        ("012,nan,F,1,sick\n", "column 'age', row 6: not a finite number"),
        ("012,40,Q,1,sick\n", "column 'sex', row 6: not one of the 3 declared categories"),
        ("012,40,F,1,dead\n", "column 'outcome', row 6: not one of the 2 declared classes"),
        ("012,40,F,,sick\n", "column 'ward', row 6: missing value"),
    ],
)
def test_a_row_that_does_not_fit_is_an_error_naming_column_and_row_not_the_value(
    tmp_path: Path, row: str, message: str
) -> None:
    (tmp_path / "t.csv").write_text(HEADER + "".join(ROWS) + row)
    with pytest.raises(DataLoadError) as raised:
        load(tmp_path, "t.csv", samples=6)
    assert message in str(raised.value)
    assert "abc" not in str(raised.value) and "dead" not in str(raised.value)


@pytest.mark.parametrize(
    ("csv", "masking", "message"),
    [
        (HEADER + "".join(ROWS), Masking(), "column 'id' is not declared"),
        ("age,sex,outcome\n50,F,sick\n", DROP_ID, "has no column 'id'"),
        ("id,age,sex,ward,outcome,age\n1,2,F,1,sick,3\n", DROP_ID, "column 'age' appears twice"),
        (HEADER + "".join(ROWS[:4]), DROP_ID, "holds 4 rows but 5 were declared"),
        (HEADER + "".join(ROWS), Masking(drop=("id", "age")), "'age' is a feature or the label"),
    ],
)
def test_columns_must_match_the_declaration(tmp_path: Path, csv: str, masking: Masking, message: str) -> None:
    (tmp_path / "t.csv").write_text(csv)
    with pytest.raises(DataLoadError, match=message):
        load(tmp_path, "t.csv", masking=masking)


def test_quoted_cells_may_hold_commas_and_newlines(tmp_path: Path) -> None:
    schema = TableSchema.from_spec({**SPEC, "features": SPEC["features"][:2]})
    (tmp_path / "t.csv").write_text('note,age,sex,outcome\n"a, b\nc",50,F,sick\nplain,20,M,healthy\n')
    data = load(tmp_path, "t.csv", samples=2, schema=schema, masking=Masking(drop=("note",)))
    assert len(data.y_train) == 2


def test_parquet_dates_and_other_types_reach_generalization(tmp_path: Path) -> None:
    schema = TableSchema.from_spec(
        {"label": {"column": "outcome", "classes": ["0", "1"]},
         "features": [{"name": "born", "type": "numeric", "min": 1900, "max": 2030}]}
    )  # fmt: skip
    table = pa.table({"born": [dt.date(1950, 5, 17), dt.date(2030, 1, 1)], "outcome": [0, 1]})
    parquet.write_table(table, tmp_path / "d.parquet")
    masking = Masking.from_spec({"generalize": [{"column": "born", "date": "year"}]})
    data = load(tmp_path, "d.parquet", samples=2, schema=schema, masking=masking)
    assert sorted(data.x_train[:, 0].tolist()) == pytest.approx([2 * 50 / 130 - 1, 1.0])


def test_unknown_file_types_and_broken_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(DataLoadError, match="must be .csv, .parquet or .npz"):
        load(tmp_path, "t.json")
    (tmp_path / "t.parquet").write_bytes(b"not parquet, 555-12-3456")
    with pytest.raises(DataLoadError, match="cannot read the table") as raised:
        load(tmp_path, "t.parquet")
    assert "555" not in str(raised.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"label": {"classes": ["a"]}}, "at least 2 distinct classes"),
        ({"label": {"column": "y", "classes": ["a", "b"]},
          "features": [{"name": "y", "type": "categorical", "categories": ["1"]}]}, "both the label and a feature"),
        ({"label": {"classes": ["a", "b"]},
          "features": [{"name": "v", "type": "numeric", "min": 1, "max": 1}]}, "min must be smaller than max"),
        ({"label": {"classes": ["a", "b"]}, "features": [{"name": "v", "type": "text"}]}, "unknown type 'text'"),
        ({"features": []}, "malformed spec.data.schema"),
    ],
)  # fmt: skip
def test_malformed_schemas_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        TableSchema.from_spec(spec)
