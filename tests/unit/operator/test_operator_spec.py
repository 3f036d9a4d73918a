"""The typed spec and its versions: defaults filled in once, and versions that a CRD upgrade leaves alone."""

from dataclasses import dataclass

from securemodel.operator.secure_model.spec import TrainingSpec, digest, parse

MINIMAL = {
    "model": {"architecture": "mlp"},
    "data": {"source": "builtin://breast_cancer"},
    "privacy": {"budgetRef": "b", "epsilon": 2},
}
DEFAULTED = {
    "model": {"architecture": "mlp", "params": {}},
    "data": {"source": "builtin://breast_cancer"},
    "privacy": {"budgetRef": "b", "epsilon": 2.0, "delta": 1e-5, "maxGradNorm": 1.0, "accountant": "prv"},
    "training": {"epochs": 10, "batchSize": 64, "learningRate": 0.1, "optimizer": "sgd", "seed": 0},
    "compression": {"pruning": {"sparsity": 0.0}, "quantization": "none"},
    "serving": {"replicas": 1, "clients": [], "certificateLifetime": "720h"},
    "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
}


def test_a_field_set_to_its_default_and_an_omitted_one_are_the_same_spec_and_version() -> None:
    assert parse(MINIMAL) == parse(DEFAULTED)
    assert parse(MINIMAL).versions == parse(DEFAULTED).versions


def test_a_later_defaulted_field_changes_no_version() -> None:
    @dataclass(frozen=True)
    class TrainingWithWarmup(TrainingSpec):  # what a later CRD could add, at its default
        warmup_steps: int = 0

    assert digest(TrainingWithWarmup(epochs=20)) == digest(TrainingSpec(epochs=20))
    assert digest(TrainingWithWarmup(epochs=20, warmup_steps=5)) != digest(TrainingSpec(epochs=20))


def test_what_changes_training_and_what_only_recompresses() -> None:
    base = parse(MINIMAL).versions
    retrained = parse({**MINIMAL, "training": {"epochs": 11}}).versions
    recompressed = parse({**MINIMAL, "compression": {"quantization": "int8"}}).versions
    served = parse({**MINIMAL, "serving": {"replicas": 3, "clients": ["a"]}, "resources": {"gpus": 1}}).versions
    assert retrained.training != base.training and retrained.version != base.version
    assert recompressed.training == base.training and recompressed.version != base.version
    assert served == base
    assert parse({**MINIMAL, "model": {"architecture": "mlp", "params": {"b": 1, "a": 2}}}).versions == parse(
        {**MINIMAL, "model": {"architecture": "mlp", "params": {"a": 2, "b": 1}}}
    ).versions  # params are canonical JSON


def test_client_entries_may_be_names_or_objects() -> None:
    named = parse({**MINIMAL, "serving": {"clients": ["frontend", {"name": "batch"}]}})
    assert named.serving.clients == ("frontend", "batch")
