"""Data loading follows the operator's size, part and shard rules (nothing held out); pvc:// files stay inside their volume.

(Moved here from tests/unit/workers/test_worker_data_loading.py, updated for public preprocessing.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from securemodel.data.loading import DataLoadError, load_dataset, load_evaluation
from securemodel.data.sources import BUILTIN_SIZES, dataset_size, parse_source, shard_indices
from securemodel.data.tables import TableSchema

THREE_CLASSES = TableSchema.from_spec({"label": {"classes": ["a", "b", "c"]}})


@pytest.mark.parametrize("name", sorted(BUILTIN_SIZES))
def test_builtin_sizes_are_the_ones_the_operator_computes(name: str) -> None:
    data = load_dataset(f"builtin://{name}")
    assert len(data.y_train) == len(data.x_train) == dataset_size(parse_source(f"builtin://{name}"))
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    x, y = load_evaluation(f"builtin://{name}?part=evaluation", training=f"builtin://{name}")
    assert len(y) == len(x) == dataset_size(parse_source(f"builtin://{name}?part=evaluation"))
    assert len(y) + len(data.y_train) == BUILTIN_SIZES[name]
    assert data.num_classes == len(np.unique(np.concatenate([data.y_train, y])))
    # the two parts are disjoint: no evaluation example is a training example
    assert not {bytes(row) for row in data.x_train} & {bytes(row) for row in x} or name == "topics"


def test_the_public_evaluation_part_is_never_trained_on() -> None:
    with pytest.raises(DataLoadError, match="the public evaluation part is never trained on"):
        load_dataset("builtin://iris?part=evaluation")


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
    assert load_dataset("builtin://digits").input_shape == (8, 8)
    assert load_dataset("builtin://wine").input_shape == (13,)


def test_shards_partition_the_dataset() -> None:
    whole = load_dataset("builtin://wine")
    shards = [load_dataset(f"builtin://wine?shard={index}&of=3") for index in range(3)]
    assert [len(shard.y_train) for shard in shards] == [48, 48, 47]  # all of the 143-example training part
    rows = np.concatenate([shard.x_train for shard in shards])
    assert sorted(map(bytes, rows)) == sorted(map(bytes, whole.x_train))


def test_an_empty_shard_is_refused(volume: Path) -> None:
    np.savez(volume / "clinic" / "two.npz", x=np.zeros((2, 4), np.float32), y=np.array([0, 1]))
    assert len(load_dataset("pvc://c/clinic/two.npz?shard=1&of=3", data_root=volume, samples=2,
                            schema=THREE_CLASSES).y_train) == 1  # fmt: skip
    with pytest.raises(DataLoadError, match="the shard holds no examples"):
        load_dataset("pvc://c/clinic/two.npz?shard=2&of=3", data_root=volume, samples=2, schema=THREE_CLASSES)


def test_digits_pixels_map_from_their_published_range() -> None:
    digits = load_dataset("builtin://digits")
    assert digits.standardization is not None
    assert np.all(digits.standardization.mean == 8) and np.all(digits.standardization.scale == 8)
    public, _ = load_evaluation("builtin://digits?part=evaluation", training="builtin://digits")
    for inputs in (digits.model_inputs(digits.x_train), digits.model_inputs(public)):
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
    data = load_dataset("pvc://claim/clinic/data.npz", data_root=volume, samples=100, schema=THREE_CLASSES)
    assert (len(data.y_train), data.num_classes, data.input_shape) == (100, 3, (4,))  # all of it: nothing held out
    assert data.standardization is None
    with np.load(volume / "clinic" / "data.npz") as raw:
        assert {bytes(row) for row in data.x_train} <= {bytes(row) for row in raw["x"].astype(np.float32)}


def test_pvc_shard_follows_the_shard_rule(volume: Path) -> None:
    data = load_dataset("pvc://claim/clinic/data.npz?shard=1&of=4", data_root=volume, samples=100,
                        schema=THREE_CLASSES)  # fmt: skip
    with np.load(volume / "clinic" / "data.npz") as raw:
        np.testing.assert_array_equal(data.y_train, raw["y"][shard_indices(100, 1, 4)])
    assert len(data.y_train) == 25


@pytest.mark.parametrize("path", ["../secret.npz", "clinic/../../secret.npz", "/etc/passwd", "clinic/escape.npz"])
def test_paths_leaving_the_volume_are_refused(volume: Path, path: str) -> None:
    os.symlink(volume.parent / "secret.npz", volume / "clinic" / "escape.npz")
    with pytest.raises(DataLoadError, match="volume"):
        load_dataset(f"pvc://claim/{path}", data_root=volume, samples=100, schema=THREE_CLASSES)


@pytest.mark.parametrize(
    ("samples", "message"),
    [(99, "holds 100 examples but 99 were declared"), (None, "spec.data.samples must give the number")],
)
def test_a_pvc_file_of_another_size_than_declared_is_refused(volume: Path, samples: int | None, message: str) -> None:
    with pytest.raises(DataLoadError, match=message):
        load_dataset("pvc://claim/clinic/data.npz", data_root=volume, samples=samples, schema=THREE_CLASSES)


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
        load_dataset("pvc://c/bad.npz", data_root=tmp_path, samples=3, schema=THREE_CLASSES)


def test_unknown_builtin_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="unknown built-in dataset 'mnist'"):
        load_dataset("builtin://mnist")
    with pytest.raises(DataLoadError, match="cannot read"):
        load_dataset("pvc://c/none.npz", data_root=tmp_path, samples=3, schema=THREE_CLASSES)
