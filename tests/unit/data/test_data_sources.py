"""Data sources and the sizes that follow from them without the data."""

import re

import numpy as np
import pytest

from securemodel.data.sources import (
    BUILTIN_SIZES,
    BuiltinSource,
    PvcSource,
    Shard,
    SourceError,
    check_evaluation,
    dataset_size,
    evaluation_size,
    parse_source,
    part_indices,
    shard_indices,
    shard_size,
)


def test_the_size_table_matches_scikit_learn_and_the_token_datasets() -> None:
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is a worker dependency (.[worker])")
    from securemodel.data.tokens import TOKEN_DATASETS, read_token_dataset

    for name, size in BUILTIN_SIZES.items():
        if name in TOKEN_DATASETS:
            x, y, _ = read_token_dataset(name)
            assert len(x) == len(y) == size, name
            continue
        bunch = getattr(datasets, f"load_{name}")()
        assert len(bunch.target) == len(bunch.data) == size, name
        assert len(set(bunch.target)) >= 2, f"{name} is not a classification dataset"


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("builtin://wine", BuiltinSource("wine")),
        ("builtin://breast_cancer?shard=2&of=3", BuiltinSource("breast_cancer", Shard(2, 3))),
        ("builtin://breast_cancer?part=evaluation", BuiltinSource("breast_cancer", evaluation=True)),
        ("pvc://clinic-data/2026/train.npz", PvcSource("clinic-data", "2026/train.npz")),
        ("pvc://clinic-data/train.npz?shard=0&of=2", PvcSource("clinic-data", "train.npz", Shard(0, 2))),
    ],
)
def test_sources_parse(source: str, parsed: BuiltinSource | PvcSource) -> None:
    assert parse_source(source) == parsed


@pytest.mark.parametrize(
    "source",
    [
        "s3://bucket/key",
        "builtin://",
        "builtin://wine/extra",
        "pvc://claim",
        "pvc://claim/",
        "builtin://wine?shard=3&of=3",
        "builtin://wine?shard=1",
        "builtin://wine?shard=a&of=2",
        "builtin://wine?shard=0&of=2&x=1",
        "builtin://wine?part=training",
        "builtin://wine?part=evaluation&shard=0&of=2",
        "pvc://claim/x.npz?part=evaluation",
    ],
)
def test_malformed_sources_are_refused(source: str) -> None:
    with pytest.raises(SourceError):
        parse_source(source)


def test_shard_sizes_follow_from_n_alone_and_match_the_shard_rule() -> None:
    for n in (1, 7, 150, 569, 1797):
        for count in (1, 2, 3, 7):
            shards = [shard_indices(n, index, count) for index in range(count)]
            assert [len(s) for s in shards] == [shard_size(n, index, count) for index in range(count)]
            assert sorted(np.concatenate(shards).tolist()) == list(range(n)), "the shards partition the data"


def test_the_shard_rule_is_a_fixed_permutation() -> None:
    expected = np.array_split(np.random.default_rng(0).permutation(569), 3)[1]
    assert np.array_equal(shard_indices(569, 1, 3), expected)


def test_dataset_sizes() -> None:
    assert dataset_size(parse_source("builtin://breast_cancer")) == 456  # the training part of 569
    assert dataset_size(parse_source("builtin://breast_cancer?part=evaluation")) == 113
    assert [dataset_size(parse_source(f"builtin://breast_cancer?shard={i}&of=3")) for i in range(3)] == [152] * 3
    assert dataset_size(parse_source("pvc://c/x.npz"), samples=1000) == 1000
    assert dataset_size(parse_source("pvc://c/x.npz?shard=1&of=3"), samples=1000) == 333


def test_a_pvc_source_needs_its_declared_size_and_a_builtin_a_known_name() -> None:
    with pytest.raises(SourceError, match="spec.data.samples"):
        dataset_size(parse_source("pvc://c/x.npz"))
    with pytest.raises(SourceError, match="unknown built-in dataset 'covtype'"):
        dataset_size(parse_source("builtin://covtype"))


@pytest.mark.parametrize("n", [1, 4, 5, 150, 178, 569, 1797, 4096])
def test_the_part_rule_cuts_a_fixed_permutation_into_disjoint_parts(n: int) -> None:
    training, evaluation = part_indices(n, evaluation=False), part_indices(n, evaluation=True)
    assert len(evaluation) == evaluation_size(n) == n // 5
    assert not set(training.tolist()) & set(evaluation.tolist()), "never trained on"
    assert sorted([*training, *evaluation]) == list(range(n))
    permutation = np.random.default_rng(0).permutation(n)
    assert np.array_equal(evaluation, permutation[n - n // 5 :]) and np.array_equal(training, permutation[: n - n // 5])


@pytest.mark.parametrize(
    ("training", "evaluation"),
    [
        ("builtin://breast_cancer", "builtin://breast_cancer?part=evaluation"),
        ("builtin://breast_cancer?shard=1&of=3", "builtin://breast_cancer?part=evaluation"),
        ("pvc://clinic/2026/train.csv", "pvc://clinic/2026/public.csv"),
        ("pvc://clinic/train.npz", "pvc://public-data/train.npz"),
    ],
)
def test_evaluation_sources_apart_from_the_training_data(training: str, evaluation: str) -> None:
    check_evaluation(training, evaluation)


@pytest.mark.parametrize(
    ("training", "evaluation", "complaint"),
    [
        ("builtin://breast_cancer", "builtin://breast_cancer", "its public evaluation part"),
        ("builtin://breast_cancer", "builtin://breast_cancer?shard=0&of=2", "its public evaluation part"),
        ("builtin://breast_cancer", "builtin://wine?part=evaluation", "builtin://breast_cancer?part=evaluation"),
        ("builtin://breast_cancer", "pvc://c/x.npz", "its public evaluation part"),
        ("pvc://clinic/train.csv", "pvc://clinic/train.csv", "is the training data"),
        ("pvc://clinic/a/train.csv", "pvc://clinic/a//train.csv", "is the training data"),
        ("pvc://clinic/train.csv", "pvc://clinic/public.npz", "a pvc:// file of the same type"),
        ("pvc://clinic/train.csv", "builtin://iris?part=evaluation", "a pvc:// file of the same type"),
    ],
)
def test_evaluation_sources_that_may_hold_training_records_are_refused(
    training: str, evaluation: str, complaint: str
) -> None:
    with pytest.raises(SourceError, match=re.escape(complaint)):
        check_evaluation(training, evaluation)
