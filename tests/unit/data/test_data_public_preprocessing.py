"""Preprocessing comes from public metadata only: one row never changes how another is encoded."""

import re
from pathlib import Path

import numpy as np
import pytest

from securemodel.data.builtin import BUILTIN_BOUNDS, BUILTIN_CLASSES
from securemodel.data.loading import DataLoadError, Standardization, load_dataset
from securemodel.data.sources import BUILTIN_SIZES
from securemodel.data.tokens import TOKEN_DATASETS

# The built-in tables (the token datasets hold ids, which are not scaled).
TABLES = sorted(set(BUILTIN_SIZES) - set(TOKEN_DATASETS))
from securemodel.data.tables import TableSchema

datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is a worker dependency (.[worker])")

_ROW = re.compile(r"^\s*([A-Za-z][^:]*):\s+(-?[0-9.]+)\s+(-?[0-9.]+)")


def descr_bounds(descr: str) -> list[tuple[float, float]]:
    """The (min, max) rows of a DESCR "Summary Statistics" table."""
    table = descr.split(":Summary Statistics:")[1].split(":Missing Attribute Values:")[0]
    return [(float(m.group(2)), float(m.group(3))) for line in table.splitlines() if (m := _ROW.match(line))]


@pytest.mark.parametrize("name", ["breast_cancer", "iris", "wine"])
def test_the_bounds_are_the_published_ones(name: str) -> None:
    bunch = getattr(datasets, f"load_{name}")()
    published = descr_bounds(bunch.DESCR)
    assert len(published) == bunch.data.shape[1]
    assert list(zip(*BUILTIN_BOUNDS[name], strict=True)) == published


def test_digits_bounds_and_every_class_count_are_published() -> None:
    assert "integer pixels in the range 0..16" in datasets.load_digits().DESCR
    assert BUILTIN_BOUNDS["digits"] == ((0.0,) * 64, (16.0,) * 64)
    assert set(BUILTIN_CLASSES) == set(BUILTIN_BOUNDS) == set(TABLES)
    for name, classes in BUILTIN_CLASSES.items():
        assert len(getattr(datasets, f"load_{name}")().target_names) == classes, name


def test_the_published_bounds_hold_the_data_up_to_their_rounding() -> None:
    for name, (low, high) in BUILTIN_BOUNDS.items():
        data = getattr(datasets, f"load_{name}")().data
        slack = 0.02 * (np.array(high) - np.array(low))
        assert (data.min(axis=0) >= np.array(low) - slack).all(), name
        assert (data.max(axis=0) <= np.array(high) + slack).all(), name


@pytest.mark.parametrize("name", TABLES)
def test_builtin_preprocessing_is_the_same_whatever_the_rows(name: str) -> None:
    """Two disjoint shards, so two sets of private rows, get the identical map onto [-1, 1]."""
    first = load_dataset(f"builtin://{name}?shard=0&of=2")
    second = load_dataset(f"builtin://{name}?shard=1&of=2")
    assert first.standardization is not None and second.standardization is not None
    assert np.array_equal(first.standardization.mean, second.standardization.mean)
    assert np.array_equal(first.standardization.scale, second.standardization.scale)
    low, high = (np.reshape(b, first.input_shape) for b in BUILTIN_BOUNDS[name])
    assert np.allclose(first.standardization.apply(np.stack([low, high])), [-np.ones_like(low), np.ones_like(high)])
    assert first.num_classes == BUILTIN_CLASSES[name]


def test_from_bounds_maps_onto_minus_one_one() -> None:
    scaling = Standardization.from_bounds(np.array([0.0, 10.0]), np.array([4.0, 30.0]))
    assert np.allclose(scaling.apply(np.array([[0.0, 10.0], [2.0, 20.0], [4.0, 30.0]])), [[-1, -1], [0, 0], [1, 1]])


SCHEMA = TableSchema.from_spec(
    {
        "label": {"column": "outcome", "classes": ["no", "yes"]},
        "features": [
            {"name": "age", "type": "numeric", "min": 0, "max": 100},
            {"name": "sex", "type": "categorical", "categories": ["F", "M"]},
        ],
    }
)


def write_csv(path: Path, rows: list[tuple[object, ...]]) -> None:
    path.write_text("age,sex,outcome\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))


def test_changing_one_table_row_changes_no_other_rows_encoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [(int(rng.integers(0, 100)), "FM"[i % 2], ["no", "yes"][i % 3 == 0]) for i in range(50)]
    write_csv(tmp_path / "t.csv", rows)
    before = load_dataset("pvc://c/t.csv", data_root=tmp_path, samples=50, schema=SCHEMA)
    rows[17] = (250, "M" if rows[17][1] == "F" else "F", "yes" if rows[17][2] == "no" else "no")  # an outlier
    write_csv(tmp_path / "t.csv", rows)
    after = load_dataset("pvc://c/t.csv", data_root=tmp_path, samples=50, schema=SCHEMA)
    changed = np.flatnonzero((before.x_train != after.x_train).any(axis=1))
    assert changed.tolist() == [17], "exactly the changed row's inputs change"
    assert np.flatnonzero(before.y_train != after.y_train).tolist() == [17]


def test_an_npz_takes_its_class_count_from_the_schema_not_from_the_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32), y=np.array([0, 1] * 5))
    schema = TableSchema.from_spec({"label": {"classes": ["a", "b", "c"]}})
    data = load_dataset("pvc://c/d.npz", data_root=tmp_path, samples=10, schema=schema)
    assert data.num_classes == 3
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32), y=np.array([0, 1, 2, 3, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(DataLoadError, match="y, row 4: not a class index of the 3 declared classes"):
        load_dataset("pvc://c/d.npz", data_root=tmp_path, samples=10, schema=schema)
    with pytest.raises(DataLoadError, match="spec.data.schema is required"):
        load_dataset("pvc://c/d.npz", data_root=tmp_path, samples=10)
