"""Load a SecureModel's training and validation data from ``spec.data.source``.

Sources:

``builtin://<name>[?shard=i&of=n]``
    A dataset bundled with scikit-learn (``breast_cancer``, ``digits``, ``wine``, ``iris``; no
    download). ``digits`` samples are 8×8 images (per-sample shape ``(8, 8)``); the others are
    feature vectors. The network sees features standardized per feature (each element of the
    per-sample shape) to zero mean and unit variance, with statistics computed on the TRAINING
    split only, after sharding and splitting, so validation examples never influence them; a
    feature constant on the training split gets scale 1. The statistics are stored in the
    trained model and applied by its predictor, so a served model takes raw features. They are
    not privatized: they are data-dependent preprocessing outside the DP-SGD guarantee,
    accepted here because the built-in datasets are public.

``pvc://<claim>/<path>[?shard=i&of=n]``
    A ``.npz`` file with arrays ``x`` (float, ``(N, *sample_shape)``) and ``y`` (integer labels
    ``0..C-1``, ``(N,)``) on the PersistentVolumeClaim ``<claim>``, which the pod mounts at
    ``data_root``; ``<path>`` is relative to that mount and may not leave it (``..``, absolute
    paths and symlinks pointing outside are refused). The features are used as they are, not
    standardized, so the DP-SGD guarantee covers everything computed from the training split.
    The number of classes is ``max(y) + 1`` over the whole file. The file must hold exactly the
    number of examples ``spec.data.samples`` declares (the operator sized q from it).

Sharding and the validation split follow :mod:`securemodel.data.sources`, the rules the
operator also uses to compute the sample rate q, so that the worker trains on exactly the
``n_train`` examples q was computed for.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np

from securemodel.data.sources import (
    BuiltinSource,
    PvcSource,
    SourceError,
    dataset_size,
    parse_source,
    shard_indices,
    split_indices,
)

# Built-in datasets whose samples are images, with the per-sample shape; the others are vectors.
IMAGE_SHAPES: Final[dict[str, tuple[int, ...]]] = {"digits": (8, 8)}


class DataLoadError(ValueError):
    """The data source cannot be read or does not hold a classification dataset."""


@dataclass(frozen=True)
class Standardization:
    """Per-feature affine preprocessing ``(x - mean) / scale`` fitted on the training split."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardization:
        """Mean and standard deviation of each feature of ``x`` (axis 0); constant features get scale 1."""
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        return cls(mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize a batch ``(n, *sample_shape)``; returns float32."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)


@dataclass(frozen=True)
class Dataset:
    """Raw features and labels split into train and validation, and the preprocessing a model applies.

    ``x_train`` and ``x_val`` are float32 features as a client of the served model sends them;
    :meth:`model_inputs` applies ``standardization`` (when the source has one) to give what the
    network itself is trained on.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    standardization: Standardization | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.x_train.shape[1:])

    def model_inputs(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the network sees it: standardized when the source is standardized, float32."""
        return self.standardization.apply(x) if self.standardization is not None else x.astype(np.float32)


def load_dataset(
    source: str,
    *,
    validation_split: float,
    seed: int,
    data_root: Path | str = "/data",
    samples: int | None = None,
) -> Dataset:
    """Read ``source``, take its shard, split it by ``seed``; fit the standardization of built-in sources.

    ``data_root`` is where the pod mounts the PVC of a ``pvc://`` source and ``samples`` the
    size ``spec.data.samples`` declares for it: a file of another size is refused, because the
    operator computed the sample rate from the declared size. Raises :class:`DataLoadError`.
    """
    try:
        parsed = parse_source(source)
        expected = dataset_size(replace(parsed, shard=None), samples)
    except SourceError as err:
        raise DataLoadError(str(err)) from err
    if isinstance(parsed, BuiltinSource):
        x, y, num_classes = _read_builtin(parsed.name)
        standardize = True
    else:
        x, y, num_classes = _read_npz(parsed, Path(data_root))
        standardize = False
    if len(y) != expected:
        raise DataLoadError(
            f"{source}: holds {len(y)} examples but {expected} were declared; "
            "the sample rate the operator calibrated for would not match"
        )
    if parsed.shard is not None:
        index = shard_indices(len(y), parsed.shard.index, parsed.shard.count)
        x, y = x[index], y[index]
    try:
        train, val = split_indices(len(y), validation_split, seed)
    except SourceError as err:
        raise DataLoadError(str(err)) from err
    if len(train) == 0:
        raise DataLoadError(f"{source}: no training examples left after sharding and the validation split")
    standardization = Standardization.fit(x[train]) if standardize else None
    return Dataset(x[train], y[train], x[val], y[val], num_classes, standardization)


def _read_builtin(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn import datasets  # imported here: only the worker image has scikit-learn

    bunch = getattr(datasets, f"load_{name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    if name in IMAGE_SHAPES:
        x = x.reshape(len(x), *IMAGE_SHAPES[name])
    return x, np.asarray(bunch.target, dtype=np.int64), len(bunch.target_names)


def resolve_pvc_path(source: PvcSource, data_root: Path) -> Path:
    """The file ``source.path`` under ``data_root``; refuses any path that escapes the mount."""
    relative = Path(source.path)
    if relative.is_absolute() or ".." in relative.parts:
        raise DataLoadError(f"pvc://{source.claim}/{source.path}: the path must stay inside the volume")
    root = data_root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise DataLoadError(f"pvc://{source.claim}/{source.path}: resolves outside the volume (symlink?)")
    return path


def _read_npz(source: PvcSource, data_root: Path) -> tuple[np.ndarray, np.ndarray, int]:
    path = resolve_pvc_path(source, data_root)
    where = f"pvc://{source.claim}/{source.path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataLoadError(f"{where}: not an .npz archive")
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DataLoadError(f"{where}: the archive lacks array(s) {sorted(missing)}; it needs x and y")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        if isinstance(err, DataLoadError):
            raise
        raise DataLoadError(f"{where}: cannot read {path}: {err}") from err
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise DataLoadError(f"{where}: need x of shape (N, ...) and y of shape (N,), N ≥ 1; got {x.shape}, {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataLoadError(f"{where}: x must be numeric and y non-negative integer class labels")
    return x.astype(np.float32), y.astype(np.int64), int(y.max()) + 1
