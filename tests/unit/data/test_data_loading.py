"""Data loading follows the operator's size, shard and split rules; pvc:// files stay inside their volume.

(Moved here from tests/unit/workers/test_worker_data_loading.py, updated for public preprocessing.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from securemodel.data.loading import DataLoadError, load_dataset, load_evaluation
from securemodel.data.sources import BUILTIN_SIZES, dataset_size, parse_source
from securemodel.data.tables import TableSchema

THREE_CLASSES = TableSchema.from_spec({"label": {"classes": ["a", "b", "c"]}})


@pytest.mark.parametrize("name", sorted(BUILTIN_SIZES))
def test_builtin_sizes_are_the_ones_the_operator_computes(name: str) -> None:
    data = load_dataset(f"builtin://{name}", seed=0)
    assert (len(data.y_train), len(data.y_val)) == (dataset_size(parse_source(f"builtin://{name}")), 0)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    x, y = load_evaluation(f"builtin://{name}?part=evaluation", training=f"builtin://{name}")
    assert len(y) == len(x) == dataset_size(parse_source(f"builtin://{name}?part=evaluation"))
    assert len(y) + len(data.y_train) == BUILTIN_SIZES[name]
    assert data.num_classes == len(np.unique(np.concatenate([data.y_train, y])))
    # the two parts are disjoint: no evaluation example is a training example
    assert not {bytes(row) for row in data.x_train} & {bytes(row) for row in x} or name == "topics"


def test_the_public_evaluation_part_is_never_trained_on() -> None:
    with pytest.raises(DataLoadError, match="the public evaluation part is never trained on"):
        load_dataset("builtin://iris?part=evaluation", seed=0)


def test_an_evaluation_file_that_is_the_training_file_under_another_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clinic").mkdir()
    np.savez(tmp_path / "clinic" / "train.npz", x=np.zeros((3, 2), np.float32), y=np.array([0, 1, 2]))
    (tmp_path / "clinic" / "public.npz").symlink_to("train.npz")
    with pytest.raises(DataLoadError, match="is the training file"):
        load_evaluation("pvc://c/clinic/public.npz", training="pvc://c/clinic/train.npz", data_root=tmp_path,
                        samples=3, schema=THREE_CLASSES)  # fmt: skip
    os.link(tmp_path / "clinic" / "train.npz", tmp_path / "clinic" / "copy.npz")
    with pytest.raises(DataLoadError, match="is the training file"):
        load_evaluation("pvc://c/clinic/copy.npz", training="pvc://c/clinic/train.npz", data_root=tmp_path,
                        samples=3, schema=THREE_CLASSES)  # fmt: skip


def test_digits_are_images() -> None:
    assert load_dataset("builtin://digits", validation_split=0.1, seed=0).input_shape == (8, 8)
    assert load_dataset("builtin://wine", validation_split=0.1, seed=0).input_shape == (13,)


def test_shards_partition_the_dataset() -> None:
    whole = load_dataset("builtin://wine", validation_split=0.0, seed=0)
    rows: list[np.ndarray] = []
    for index in range(3):
        shard = load_dataset(f"builtin://wine?shard={index}&of=3", validation_split=0.25, seed=5)
        assert len(shard.y_train) + len(shard.y_val) in (47, 48)  # shards of the 143-example training part
        rows += [shard.x_train, shard.x_val]
    assert sorted(map(bytes, np.concatenate(rows))) == sorted(map(bytes, whole.x_train))


def test_the_seed_decides_the_split() -> None:
    a, b, c = (load_dataset("builtin://iris", validation_split=0.3, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)


def test_digits_pixels_map_from_their_published_range() -> None:
    digits = load_dataset("builtin://digits", validation_split=0.2, seed=0)
    assert digits.standardization is not None
    assert np.all(digits.standardization.mean == 8) and np.all(digits.standardization.scale == 8)
    inputs = digits.model_inputs(digits.x_val)
    assert inputs.min() >= -1 and inputs.max() <= 1


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A PVC mount with clinic/data.npz (100 examples, 4 features, labels 0..2) and a file outside it."""
    root = tmp_path / "data"
    (root / "clinic").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(root / "clinic" / "data.npz", x=rng.normal(size=(100, 4)), y=rng.integers(0, 3, 100))
    np.savez(tmp_path / "secret.npz", x=np.ones((100, 4)), y=np.zeros(100, dtype=int))
    return root


def test_pvc_npz_is_read_relative_to_the_mount_and_not_standardized(volume: Path) -> None:
    data = load_dataset("pvc://claim/clinic/data.npz", validation_split=0.2, seed=0, data_root=volume, samples=100,
                        schema=THREE_CLASSES)
    assert (len(data.y_train), len(data.y_val), data.num_classes, data.input_shape) == (80, 20, 3, (4,))
    assert data.standardization is None
    with np.load(volume / "clinic" / "data.npz") as raw:
        assert {bytes(row) for row in data.x_train} <= {bytes(row) for row in raw["x"].astype(np.float32)}


def test_pvc_shard_follows_the_shard_rule(volume: Path) -> None:
    data = load_dataset("pvc://claim/clinic/data.npz?shard=1&of=4", validation_split=0.2, seed=0,
                        data_root=volume, samples=100,
                        schema=THREE_CLASSES)  # fmt: skip
    assert len(data.y_train) + len(data.y_val) == 25


@pytest.mark.parametrize("path", ["../secret.npz", "clinic/../../secret.npz", "/etc/passwd", "clinic/escape.npz"])
def test_paths_leaving_the_volume_are_refused(volume: Path, path: str) -> None:
    os.symlink(volume.parent / "secret.npz", volume / "clinic" / "escape.npz")
    with pytest.raises(DataLoadError, match="volume"):
        load_dataset(f"pvc://claim/{path}", validation_split=0.2, seed=0, data_root=volume, samples=100,
                        schema=THREE_CLASSES)


@pytest.mark.parametrize(
    ("samples", "message"),
    [(99, "holds 100 examples but 99 were declared"), (None, "spec.data.samples must give the number")],
)
def test_a_pvc_file_of_another_size_than_declared_is_refused(volume: Path, samples: int | None, message: str) -> None:
    with pytest.raises(DataLoadError, match=message):
        load_dataset("pvc://claim/clinic/data.npz", validation_split=0.2, seed=0, data_root=volume, samples=samples,
                     schema=THREE_CLASSES)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 2))}, r"lacks array\(s\) \['y'\]"),
        ({"x": np.zeros((3, 2)), "y": np.array([0.5, 1, 2])}, "y integer class indices"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "need x of shape"),
    ],
)
def test_malformed_npz_files_are_refused(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataLoadError, match=message):
        load_dataset("pvc://c/bad.npz", validation_split=0.2, seed=0, data_root=tmp_path, samples=3, schema=THREE_CLASSES)


def test_unknown_builtin_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="unknown built-in dataset 'mnist'"):
        load_dataset("builtin://mnist", validation_split=0.2, seed=0)
    with pytest.raises(DataLoadError, match="cannot read"):
        load_dataset("pvc://c/none.npz", validation_split=0.2, seed=0, data_root=tmp_path, samples=3, schema=THREE_CLASSES)
