"""Dataset binding and consent: which budget may be charged for which data, by whom."""

import pytest

from securemodel.operator.budget.directory import EVALUATION_PROTECTED, IMAGE_NOT_ALLOWED, NOT_CONSENTED, NOT_COVERED, OVERLAPPING, BudgetDirectory
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.privacy.coverage import consents, covers, overlaps, touches, validate

WORKER = "securemodel-worker:dev"


@pytest.mark.parametrize(
    ("patterns", "source", "covered"),
    [
        (["builtin://wine"], "builtin://wine", True),
        (["builtin://wine"], "builtin://wine?shard=1&of=3", True),  # a dataset covers its shards
        (["builtin://wine?shard=1&of=3"], "builtin://wine?shard=1&of=3", True),
        (["builtin://wine?shard=1&of=3"], "builtin://wine", False),  # a shard does not cover the whole
        (["builtin://wine?shard=1&of=3"], "builtin://wine?shard=0&of=3", False),
        (["builtin://wine"], "builtin://iris", False),
        (["builtin://wine"], "builtin://wine?part=evaluation", False),  # the public part is not the training part
        (["pvc://data/"], "pvc://data/clinic/a.csv", True),
        (["pvc://data/clinic/"], "pvc://data/other/a.csv", False),
        (["pvc://data/clinic/a.csv"], "pvc://data/clinic/a.csv?shard=0&of=2", True),
        (["pvc://data/clinic/a.csv"], "pvc://data/clinic/a.csv.bak", False),
        (["pvc://data/clinic"], "pvc://data/clinic/a.csv", False),  # without the slash it is a file, not a prefix
        ([], "builtin://wine", False),
        (["not a source"], "builtin://wine", False),
    ],
)
def test_a_budget_covers_exactly_the_data_it_declares(patterns: list[str], source: str, covered: bool) -> None:
    assert covers(patterns, source) is covered


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("builtin://wine", "builtin://wine", True),
        ("builtin://wine", "builtin://wine?shard=0&of=2", True),
        ("builtin://wine?shard=0&of=2", "builtin://wine?shard=1&of=2", False),
        ("builtin://wine?shard=0&of=2", "builtin://wine?shard=1&of=3", True),  # other splits may share examples
        ("pvc://data/", "pvc://data/clinic/a.csv", True),
        ("pvc://data/clinic/a.csv", "pvc://data/", True),
        ("pvc://data/a/", "pvc://data/b/", False),
        ("pvc://data/a/", "pvc://data/a/x/", True),
        ("builtin://wine", "builtin://iris", False),
    ],
)
def test_budgets_overlap_when_they_may_name_a_common_example(first: str, second: str, overlap: bool) -> None:
    assert bool(overlaps([first], [second])) is overlap
    assert bool(overlaps([second], [first])) is overlap


def test_malformed_patterns_are_reported() -> None:
    assert validate(["builtin://wine", "pvc://data/"]) == []
    assert len(validate(["ftp://x", "builtin://wine/", "builtin://wine?shard=3&of=2"])) == 3


def test_a_budget_consents_to_its_own_namespace_and_to_the_consumers_it_names() -> None:
    named = [{"kind": "FederatedRound", "namespace": "hub"}]
    assert consents([], "SecureModel", "clinic-a", "clinic-a")
    assert consents(named, "FederatedRound", "hub", "clinic-a")
    assert not consents(named, "SecureModel", "hub", "clinic-a")  # consent is per kind
    assert not consents(named, "FederatedRound", "elsewhere", "clinic-a")
    assert not consents([], "FederatedRound", "hub", "clinic-a")


def budget_spec(*sources: str, consumers: list[dict[str, str]] | None = None) -> dict[str, object]:
    return {"epsilon": 1.0, "data": {"sources": list(sources)}, "consumers": consumers or []}


def test_the_directory_refuses_uncovered_data_foreign_consumers_and_shared_data() -> None:
    directory = BudgetDirectory()
    a, b = BudgetRef("ns", "a"), BudgetRef("ns", "b")
    assert directory.put(a, budget_spec("builtin://wine?shard=0&of=2")) == set()
    assert directory.refusal(a, "SecureModel", "ns", "builtin://wine?shard=0&of=2", WORKER, WORKER) is None
    refused = directory.refusal(a, "SecureModel", "ns", "builtin://wine", WORKER, WORKER)
    assert refused is not None and refused.reason == NOT_COVERED and "builtin://wine" in refused.message
    foreign = directory.refusal(a, "FederatedRound", "hub", "builtin://wine?shard=0&of=2", WORKER, WORKER)
    assert foreign is not None and foreign.reason == NOT_CONSENTED

    # A second budget over the same data: both stop, each names the other.
    assert directory.put(b, budget_spec("builtin://wine")) == {a}
    assert directory.overlapping(a) == ("b",) and directory.overlapping(b) == ("a",)
    shared = directory.refusal(a, "SecureModel", "ns", "builtin://wine?shard=0&of=2", WORKER, WORKER)
    assert shared is not None and shared.reason == OVERLAPPING and "b" in shared.message

    # Made disjoint by the data steward: both grant again.
    assert directory.put(b, budget_spec("builtin://wine?shard=1&of=2")) == {a}
    assert directory.overlapping(a) == ()
    assert directory.put(b, budget_spec("builtin://wine")) == {a}
    assert directory.drop(b) == {a}
    assert directory.overlapping(a) == ()


def test_data_a_budget_protects_cannot_be_declared_public() -> None:
    directory = BudgetDirectory()
    directory.put(BudgetRef("ns", "train"), budget_spec("pvc://data/train.csv"))
    directory.put(BudgetRef("ns", "exports"), budget_spec("pvc://exports/"))
    ref = BudgetRef("ns", "train")
    assert directory.refusal(ref, "SecureModel", "ns", "pvc://data/train.csv", WORKER, WORKER, "pvc://public/eval.csv") is None
    refused = directory.refusal(ref, "SecureModel", "ns", "pvc://data/train.csv", WORKER, WORKER, "pvc://exports/eval.csv")
    assert refused is not None and refused.reason == EVALUATION_PROTECTED and "PrivacyBudget exports" in refused.message
    # what no budget of the namespace covers may be declared public (e.g. the starting weights of a fine-tuning)
    assert directory.protecting("ns", "pvc://exports/weights/mlp.pt") == ("exports",)
    assert directory.protecting("ns", "pvc://weights/mlp.pt") == ()
    assert directory.protecting("other", "pvc://exports/weights/mlp.pt") == ()


@pytest.mark.parametrize(
    ("patterns", "source", "touched"),
    [
        (["builtin://wine?shard=1&of=3"], "builtin://wine", True),  # part of the whole is protected
        (["builtin://wine?shard=1&of=3"], "builtin://wine?shard=0&of=2", True),  # another split may share examples
        (["builtin://wine?shard=1&of=3"], "builtin://wine?shard=0&of=3", False),
        (["builtin://wine"], "builtin://wine?part=evaluation", False),
        (["pvc://data/a.csv?shard=0&of=2"], "pvc://data/a.csv", True),
        (["pvc://data/clinic/"], "pvc://data/open/a.csv", False),
        (["not a source"], "builtin://wine", False),
    ],
)
def test_public_data_shares_no_example_with_what_a_budget_protects(patterns: list[str], source: str, touched: bool) -> None:
    assert touches(patterns, source) is touched


def test_a_file_part_of_which_a_budget_protects_cannot_be_declared_public() -> None:
    directory = BudgetDirectory()
    directory.put(BudgetRef("ns", "shard"), budget_spec("pvc://data/eval.csv?shard=0&of=2"))
    assert directory.protecting("ns", "pvc://data/eval.csv") == ("shard",)
    refused = directory.refusal(BudgetRef("ns", "shard"), "SecureModel", "ns", "pvc://data/eval.csv?shard=0&of=2",
                                WORKER, WORKER, "pvc://data/eval.csv")  # fmt: skip
    assert refused is not None and refused.reason == EVALUATION_PROTECTED


def test_the_directory_names_the_budgets_of_a_namespace_it_has_not_recorded_yet() -> None:
    directory = BudgetDirectory()
    listed = [BudgetRef("ns", "b"), BudgetRef("ns", "a"), BudgetRef("other", "c")]
    assert directory.unrecorded(listed, "ns") == ("a", "b")
    directory.put(BudgetRef("ns", "a"), budget_spec("builtin://wine"))
    assert directory.unrecorded(listed, "ns") == ("b",) and directory.unrecorded(listed, "empty") == ()


def test_budgets_of_other_namespaces_never_overlap() -> None:
    directory = BudgetDirectory()
    directory.put(BudgetRef("clinic-a", "b"), budget_spec("builtin://wine"))
    assert directory.put(BudgetRef("clinic-b", "b"), budget_spec("builtin://wine")) == set()
    assert directory.overlapping(BudgetRef("clinic-a", "b")) == ()


def test_the_directory_knows_a_budget_once_its_spec_is_recorded() -> None:
    directory, ref = BudgetDirectory(), BudgetRef("ns", "b")
    assert not directory.knows(ref)
    directory.put(ref, budget_spec("builtin://wine"))
    assert directory.knows(ref)
    directory.drop(ref)
    assert not directory.knows(ref)


def test_an_unknown_budget_refuses_nothing() -> None:
    assert BudgetDirectory().refusal(BudgetRef("ns", "missing"), "SecureModel", "ns", "builtin://wine", WORKER, WORKER) is None


def test_only_the_images_a_budget_allows_may_read_its_data() -> None:
    directory = BudgetDirectory()
    default, listed = BudgetRef("ns", "default"), BudgetRef("ns", "listed")
    directory.put(default, budget_spec("builtin://wine"))
    pinned = "registry.example/team/trainer@sha256:" + "a" * 64
    directory.put(listed, {**budget_spec("builtin://iris"), "allowedImages": [pinned]})
    assert directory.refusal(default, "SecureModel", "ns", "builtin://wine", WORKER, WORKER) is None
    custom = directory.refusal(default, "SecureModel", "ns", "builtin://wine", "evil/exfiltrate:1", WORKER)
    assert custom is not None and custom.reason == IMAGE_NOT_ALLOWED and "evil/exfiltrate:1" in custom.message
    assert directory.refusal(listed, "SecureModel", "ns", "builtin://iris", pinned, WORKER) is None
    # Listing images replaces the default: the worker image itself must then be listed.
    worker = directory.refusal(listed, "SecureModel", "ns", "builtin://iris", WORKER, WORKER)
    assert worker is not None and worker.reason == IMAGE_NOT_ALLOWED
