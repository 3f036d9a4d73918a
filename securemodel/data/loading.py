"""Load a SecureModel's training data from ``spec.data.source``, and its public evaluation data.

Sources:

``builtin://<name>[?shard=i&of=n]`` and ``builtin://<name>?part=evaluation``
    A dataset bundled with scikit-learn (``breast_cancer``, ``digits``, ``wine``, ``iris``; no
    download) or the synthetic ``topics``: its training part, or its public evaluation part (the
    part rule of :mod:`securemodel.data.sources`). ``digits`` samples are 8×8 images
    (per-sample shape ``(8, 8)``); the others are feature vectors. The network sees each feature mapped linearly from its PUBLISHED bounds
    (:mod:`securemodel.data.builtin`, from the dataset's description) onto ``[-1, 1]``; the class
    count is published too. Nothing of the preprocessing is computed from the rows, so one
    example never changes how another is encoded (which DP-SGD's sensitivity argument needs).
    The map is stored in the trained model and applied by its predictor, so a served model takes
    raw features.

``pvc://<claim>/<path>``
    A file on the PersistentVolumeClaim ``<claim>``, which the pod mounts at ``data_root``;
    ``<path>`` is relative to that mount and may not leave it (``..``, absolute paths and
    symlinks pointing outside are refused). It must hold exactly the number of examples
    ``spec.data.samples`` declares (the operator sized q from it). ``spec.data.schema``
    (:class:`~securemodel.data.tables.TableSchema`) declares the classes, so their number is
    never read from the data:

    * ``.csv`` / ``.parquet``: a table whose label and features the schema declares, encoded by
      it (:mod:`securemodel.data.tables`) from the masked view (:mod:`securemodel.data.masking`);
      every column must be declared by the schema or a masking rule;
    * ``.npz``: arrays ``x`` (float, ``(N, *sample_shape)``, used as they are) and ``y``
      (integer class indices into the schema's classes, ``(N,)``).

The part rule and sharding follow :mod:`securemodel.data.sources`, the rules the operator also
uses to compute the sample rate q, so that the worker trains on exactly the examples q was
computed for: all of them (nothing is held out).

Evaluation (:func:`load_evaluation`) reads only a source the user declared public in
``spec.data.evaluation``, which :func:`securemodel.data.sources.check_evaluation` keeps apart
from the training data; nothing is ever evaluated on private records.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np

from securemodel.data.builtin import BUILTIN_BOUNDS, BUILTIN_CLASSES
from securemodel.data.tokens import TOKEN_DATASETS, read_token_dataset
from securemodel.data.encoding import TableEncoding
from securemodel.data.masking import Masking, check_columns
from securemodel.data.sources import (
    BUILTIN_SIZES,
    BuiltinSource,
    PvcSource,
    SourceError,
    dataset_size,
    parse_source,
    shard_indices,
    check_evaluation,
    part_indices,
)
from securemodel.data.tables import TABLE_SUFFIXES, SchemaError, TableSchema, read_table

# Built-in datasets whose samples are images, with the per-sample shape; the others are vectors.
IMAGE_SHAPES: Final[dict[str, tuple[int, ...]]] = {"digits": (8, 8)}


class DataLoadError(ValueError):
    """The data source cannot be read or does not hold a classification dataset."""


@dataclass(frozen=True)
class Standardization:
    """Per-feature affine preprocessing ``(x - mean) / scale``, stored in the model and applied by its predictor."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_bounds(cls, low: np.ndarray, high: np.ndarray) -> Standardization:
        """The map of public bounds ``[low, high]`` onto ``[-1, 1]`` (values outside map outside)."""
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        return cls(((low + high) / 2).astype(np.float32), ((high - low) / 2).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize a batch ``(n, *sample_shape)``; returns float32."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)


@dataclass(frozen=True)
class Dataset:
    """The training features and labels (all of the source), and the preprocessing a model applies.

    ``x_train`` holds float32 features as a client of the served model sends them:
    raw features for array sources, for which :meth:`model_inputs` applies ``standardization``
    (built-in sources) to give what the network is trained on; for tables, the inputs that
    ``encoding`` already made of the masked view (a client sends cells by column name, see
    :meth:`securemodel.data.encoding.TableEncoding.encode_request`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    num_classes: int
    standardization: Standardization | None
    encoding: TableEncoding | None = None

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
    data_root: Path | str = "/data",
    samples: int | None = None,
    schema: TableSchema | None = None,
    masking: Masking | None = None,
) -> Dataset:
    """All of the training data ``source`` (its shard, if it names one), encoded with public preprocessing only.

    Nothing is held out: every example is trained on. ``data_root`` is where the pod mounts the
    PVC of a ``pvc://`` source, ``samples`` the size ``spec.data.samples`` declares for it (a file
    of another size is refused: the operator computed the sample rate from the declared size),
    ``schema`` and ``masking`` its ``spec.data.schema`` and ``spec.data.masking``. Only the label and feature columns of the
    masked view are read, so no pseudonymization key is needed. A built-in evaluation part is
    refused: it is public and never trained on. Raises :class:`DataLoadError`.
    """
    if isinstance(parsed := _parse(source), BuiltinSource) and parsed.evaluation:
        raise DataLoadError(f"{source}: the public evaluation part is never trained on; train on {source.split('?')[0]}")
    return _load(source, Path(data_root), samples, schema, masking)


def load_evaluation(
    source: str,
    *,
    training: str,
    data_root: Path | str = "/data",
    samples: int | None = None,
    schema: TableSchema | None = None,
    masking: Masking | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All of the public evaluation source ``source`` of a model trained on ``training``: features as a client
    sends them (or, for a table, as ``schema`` and ``masking`` encode it) and labels.

    Refuses a source that may hold training records (:func:`securemodel.data.sources.check_evaluation`;
    on a shared volume, also a path that is the training file). Raises :class:`DataLoadError`.
    """
    root = Path(data_root)
    try:
        check_evaluation(training, source)
    except SourceError as err:
        raise DataLoadError(str(err)) from None
    evaluated, trained = _parse(source), _parse(training)
    if isinstance(evaluated, PvcSource) and isinstance(trained, PvcSource) and evaluated.claim == trained.claim:
        path, training_path = resolve_pvc_path(evaluated, root), resolve_pvc_path(trained, root)
        if path.exists() and training_path.exists() and path.samefile(training_path):
            raise DataLoadError(f"{source}: is the training file {training} (a link to it): it cannot be public")
    data = _load(source, root, samples, schema, masking)
    return data.x_train, data.y_train


def _parse(source: str) -> BuiltinSource | PvcSource:
    try:
        return parse_source(source)
    except SourceError as err:
        raise DataLoadError(str(err)) from None


def _load(
    source: str,
    data_root: Path,
    samples: int | None,
    schema: TableSchema | None,
    masking: Masking | None,
) -> Dataset:
    try:
        parsed = parse_source(source)
        expected = dataset_size(replace(parsed, shard=None), samples)
        standardization: Standardization | None = None
        encoding: TableEncoding | None = None
        if isinstance(parsed, BuiltinSource) and parsed.name in TOKEN_DATASETS:
            x, y, num_classes = _part(parsed, *read_token_dataset(parsed.name))  # token ids: nothing to scale
        elif isinstance(parsed, BuiltinSource):
            x, y, num_classes = _part(parsed, *_read_builtin(parsed.name))
            standardization = Standardization.from_bounds(*_builtin_bounds(parsed.name, x.shape[1:]))
        elif schema is None:
            raise DataLoadError(f"{source}: spec.data.schema is required with a pvc:// source (it declares the classes)")
        elif _suffix(parsed, data_root) == ".npz":
            x, y = _read_npz(parsed, data_root, schema)
            num_classes = len(schema.label.classes)
        else:
            masking = masking or Masking()
            columns = _read_table(parsed, data_root, schema, masking, expected)
            encoding = TableEncoding.of(schema, masking)
            x, y = schema.encode(masking.view(columns, include={schema.label.column, *schema.feature_columns}))
            num_classes = len(schema.label.classes)
        if len(y) != expected:
            raise DataLoadError(
                f"{source}: holds {len(y)} examples but {expected} were declared; "
                "the sample rate the operator calibrated for would not match"
            )
        if parsed.shard is not None:
            index = shard_indices(len(y), parsed.shard.index, parsed.shard.count)
            x, y = x[index], y[index]
    except (SourceError, SchemaError) as err:
        raise DataLoadError(str(err)) from None
    if len(y) == 0:
        raise DataLoadError(f"{source}: the shard holds no examples")
    return Dataset(x, y, num_classes, standardization, encoding)


def load_masked_table(
    source: str,
    *,
    schema: TableSchema,
    masking: Masking,
    key: bytes | None = None,
    data_root: Path | str = "/data",
    samples: int | None = None,
) -> dict[str, list[object]]:
    """The whole masked view of a ``.csv`` / ``.parquet`` source (every column but the dropped ones).

    ``key`` (:func:`securemodel.data.masking.read_pseudonym_key`) is needed when a column is
    pseudonymized; redacted columns run through Presidio. Raises :class:`DataLoadError`.
    """
    try:
        parsed = parse_source(source)
        if not isinstance(parsed, PvcSource) or _suffix(parsed, Path(data_root)) not in TABLE_SUFFIXES:
            raise DataLoadError(f"{source}: only a pvc:// table ({', '.join(TABLE_SUFFIXES)}) has a masked view")
        columns = _read_table(parsed, Path(data_root), schema, masking, dataset_size(parsed, samples))
        return masking.view(columns, key=key)
    except (SourceError, SchemaError) as err:
        raise DataLoadError(str(err)) from None


def _part(source: BuiltinSource, x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The training or evaluation part of a whole built-in dataset (the part rule)."""
    if len(y) != BUILTIN_SIZES[source.name]:
        raise DataLoadError(f"builtin://{source.name}: holds {len(y)} examples, not {BUILTIN_SIZES[source.name]}")
    index = part_indices(len(y), evaluation=source.evaluation)
    return x[index], y[index], classes


def _read_builtin(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn import datasets  # imported here: only the worker image has scikit-learn

    bunch = getattr(datasets, f"load_{name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    if name in IMAGE_SHAPES:
        x = x.reshape(len(x), *IMAGE_SHAPES[name])
    return x, np.asarray(bunch.target, dtype=np.int64), BUILTIN_CLASSES[name]


def _builtin_bounds(name: str, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The published bounds of ``name``'s features, in the shape of one sample."""
    bounds = BUILTIN_BOUNDS[name]
    return np.reshape(bounds.low, sample_shape), np.reshape(bounds.high, sample_shape)


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


def _suffix(source: PvcSource, data_root: Path) -> str:
    """The file type of a ``pvc://`` source, once its path is known to stay inside the volume."""
    suffix = resolve_pvc_path(source, data_root).suffix
    if suffix not in (*TABLE_SUFFIXES, ".npz"):
        raise DataLoadError(f"pvc://{source.claim}/{source.path}: a pvc:// file must be .csv, .parquet or .npz")
    return suffix


def _read_table(
    source: PvcSource, data_root: Path, schema: TableSchema, masking: Masking, expected: int
) -> dict[str, list[object]]:
    """The table's columns, after checking that they are all declared and that it holds ``expected`` rows."""
    where = f"pvc://{source.claim}/{source.path}"
    if schema.label.column is None or not schema.features:
        raise SchemaError(f"{where}: a table's schema must name the label column and at least one feature")
    masking.check(schema)
    columns = read_table(resolve_pvc_path(source, data_root), where)
    check_columns(columns, schema, masking, where)
    rows = len(columns[schema.label.column])
    if rows != expected:
        raise DataLoadError(
            f"{where}: holds {rows} rows but {expected} were declared; "
            "the sample rate the operator calibrated for would not match"
        )
    return columns


def _read_npz(source: PvcSource, data_root: Path, schema: TableSchema) -> tuple[np.ndarray, np.ndarray]:
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
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer):
        raise DataLoadError(f"{where}: x must be numeric and y integer class indices")
    outside = np.flatnonzero((y < 0) | (y >= len(schema.label.classes)))
    if len(outside):
        raise DataLoadError(
            f"{where}: y, row {outside[0] + 1}: not a class index of the {len(schema.label.classes)} declared classes"
        )
    return x.astype(np.float32), y.astype(np.int64)
