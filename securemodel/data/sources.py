"""Data sources, and the sizes that follow from them without reading any data (pure).

A source is ``builtin://<name>[?shard=i&of=n]`` (a classification dataset bundled with
scikit-learn, or a synthetic one of :mod:`securemodel.data.tokens`), ``builtin://<name>?part=evaluation``
(its public evaluation part, below) or ``pvc://<claim>/<path>`` (a file on a
PersistentVolumeClaim). The operator image has neither scikit-learn nor the data, yet it must know
how many examples a training run samples from to calibrate the noise; the worker must then train
on exactly those examples. Both sides use the rules of this module:

* **Size.** A built-in dataset of ``N`` examples (:data:`BUILTIN_SIZES`) is cut once, by the
  part rule below, into a training part and an evaluation part; ``builtin://<name>`` is the
  training part. The size of a ``pvc://`` file is declared in ``spec.data.samples`` (the
  operator cannot read the file; the worker must refuse a file of another size, or the sample
  rate would be wrong).
* **Part rule (built-in datasets).** ``p = numpy.random.default_rng(0).permutation(N)``; the
  evaluation part is ``p[N - floor(N / 5):]``, the training part the rest (in that order). The
  built-in datasets are published (they stand in for private data in the examples), so a fixed,
  published cut is itself public: the training part is what a PrivacyBudget protects and what
  DP-SGD reads, and ``builtin://<name>?part=evaluation`` is disjoint from it and never trained on.
  It is the evaluation source the examples declare public (``spec.data.evaluation``): the
  accuracy measured on it is a function of the DP-trained model and public records only, so
  publishing it costs no ε beyond the training's.
* **Shard rule.** Shard ``i`` of ``n`` of a dataset of ``N`` examples is
  ``numpy.array_split(numpy.random.default_rng(0).permutation(N), n)[i]``, so its size follows
  from ``N`` alone (:func:`shard_size`); a built-in dataset is sharded after the part rule.
* **Nothing is held out.** A SecureModel, or a FederatedRound's silo, trains on every example of
  its source (after sharding): with ``n`` of them, the Poisson sample rate is ``q = batchSize / n``.
  Accuracy is measured only on a source declared public (:func:`check_evaluation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

import numpy as np

# Examples in each classification dataset that scikit-learn bundles (no download).
BUILTIN_SIZES: Final[dict[str, int]] = {
    "breast_cancer": 569,
    "digits": 1797,
    "iris": 150,
    "wine": 178,
    "topics": 4096,  # token sequences (securemodel.data.tokens), for the transformer
}

# The seed of the shard rule: fixed, so every silo and the operator agree on the shards.
SHARD_SEED: Final[int] = 0
# The part rule: a fixed permutation, of which the last fifth is the public evaluation part.
PART_SEED: Final[int] = 0
EVALUATION_FRACTION: Final = Fraction(1, 5)
EVALUATION_PART: Final[str] = "evaluation"


class SourceError(ValueError):
    """A data source that cannot be parsed or sized."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int


@dataclass(frozen=True)
class BuiltinSource:
    """``builtin://<name>[?shard=i&of=n]`` (the training part) or ``builtin://<name>?part=evaluation``."""

    name: str
    shard: Shard | None = None
    evaluation: bool = False


@dataclass(frozen=True)
class PvcSource:
    """``pvc://<claim>/<path>[?shard=i&of=n]``; ``path`` is relative to the volume's root."""

    claim: str
    path: str
    shard: Shard | None = None


@dataclass(frozen=True)
class Evaluation:
    """``spec.data.evaluation``: a source the user declares public, and the size a ``pvc://`` file declares."""

    source: str
    samples: int | None = None


def parse_source(source: str) -> BuiltinSource | PvcSource:
    """Parse a ``spec.data.source``.

    Raises:
        SourceError: for another scheme, a missing name or path, or a malformed shard.
    """
    parts = urlsplit(source)
    if parts.scheme == "builtin" and parts.netloc and parts.path == "" and parts.query == f"part={EVALUATION_PART}":
        return BuiltinSource(parts.netloc, evaluation=True)
    shard = _shard(source, parts.query)
    if parts.scheme == "builtin" and parts.netloc and parts.path == "":
        return BuiltinSource(parts.netloc, shard)
    path = parts.path.removeprefix("/")
    if parts.scheme == "pvc" and parts.netloc and path:
        return PvcSource(parts.netloc, path, shard)
    raise SourceError(
        f"{source!r}: expected builtin://<name>[?shard=i&of=n], builtin://<name>?part=evaluation "
        "or pvc://<claim>/<path>"
    )


def _shard(source: str, query: str) -> Shard | None:
    if not query:
        return None
    fields = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    try:
        if set(fields) != {"shard", "of"} or len(fields["shard"]) != 1 or len(fields["of"]) != 1:
            raise ValueError
        index, count = int(fields["shard"][0]), int(fields["of"][0])
    except ValueError:
        raise SourceError(f"{source!r}: the query must be ?shard=i&of=n with integers i and n") from None
    if not 0 <= index < count:
        raise SourceError(f"{source!r}: shard {index} of {count} does not exist (0 <= shard < of)")
    return Shard(index, count)


def dataset_size(source: BuiltinSource | PvcSource, samples: int | None = None) -> int:
    """Examples in ``source`` after sharding; ``samples`` is the declared size of a ``pvc://`` file.

    Raises:
        SourceError: for an unknown built-in dataset, or a ``pvc://`` source without ``samples``.
    """
    if isinstance(source, BuiltinSource):
        if source.name not in BUILTIN_SIZES:
            raise SourceError(f"unknown built-in dataset {source.name!r}; known: {', '.join(sorted(BUILTIN_SIZES))}")
        evaluation = evaluation_size(BUILTIN_SIZES[source.name])
        total = evaluation if source.evaluation else BUILTIN_SIZES[source.name] - evaluation
    elif samples is None or samples < 1:
        raise SourceError(f"pvc://{source.claim}/{source.path}: spec.data.samples must give the number of examples")
    else:
        total = samples
    return total if source.shard is None else shard_size(total, source.shard.index, source.shard.count)


def evaluation_size(n: int) -> int:
    """The size of the evaluation part of a built-in dataset of ``n`` examples: ``floor(n / 5)``."""
    return math.floor(n * EVALUATION_FRACTION)


def part_indices(n: int, *, evaluation: bool) -> np.ndarray:
    """The indices (into ``range(n)``) of the training or the evaluation part of a built-in dataset: the part rule."""
    permutation = np.random.default_rng(PART_SEED).permutation(n)
    training = n - evaluation_size(n)
    return permutation[training:] if evaluation else permutation[:training]


def check_evaluation(training: str, evaluation: str) -> None:
    """Refuse an evaluation source that may hold training records, or that the model's encoding cannot read.

    A built-in dataset is evaluated on its own evaluation part, ``builtin://<name>?part=evaluation``;
    a ``pvc://`` training file on another ``pvc://`` file of the same type (a table is encoded by
    the training's schema and masking).

    Raises:
        SourceError: naming both sources.
    """
    trained, evaluated = parse_source(training), parse_source(evaluation)
    if isinstance(trained, BuiltinSource):
        if not (isinstance(evaluated, BuiltinSource) and evaluated.evaluation and evaluated.name == trained.name):
            raise SourceError(
                f"{evaluation!r} cannot evaluate a model trained on {training!r}: a built-in dataset is evaluated on "
                f"its public evaluation part, builtin://{trained.name}?part={EVALUATION_PART}"
            )
    elif not isinstance(evaluated, PvcSource) or Path(evaluated.path).suffix != Path(trained.path).suffix:
        raise SourceError(
            f"{evaluation!r} cannot evaluate a model trained on {training!r}: it must be a pvc:// file of the same type"
        )
    elif (evaluated.claim, Path(evaluated.path)) == (trained.claim, Path(trained.path)):
        raise SourceError(f"{evaluation!r} is the training data: a public evaluation source must be another file")


def shard_indices(n: int, index: int, count: int) -> np.ndarray:
    """The indices (into ``range(n)``) of shard ``index`` of ``count``: the shard rule."""
    return np.array_split(np.random.default_rng(SHARD_SEED).permutation(n), count)[index]


def shard_size(n: int, index: int, count: int) -> int:
    """``len(shard_indices(n, index, count))`` without computing the permutation."""
    if not 0 <= index < count:
        raise SourceError(f"shard {index} of {count} does not exist (0 <= shard < of)")
    return n // count + (1 if index < n % count else 0)
