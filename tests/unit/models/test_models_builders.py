"""Built-in architectures and custom entrypoint builders, and the errors a user sees when one is wrong."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from securemodel.models import ModelBuildError, ModelSpec, build_model

torch.set_num_threads(1)  # the unit tests share two cores with everything else

_modules = itertools.count()


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a module with the given source on sys.path and return its (unique) name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"custom_builders_{next(_modules)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


@pytest.mark.parametrize(
    ("spec", "input_shape"),
    [
        (ModelSpec("mlp", params={"hidden": [16, 8]}), (30,)),
        (ModelSpec("mlp", params={"hidden": [], "activation": "tanh"}), (4,)),
        (ModelSpec("mlp"), (8, 8)),
        (ModelSpec("cnn"), (8, 8)),
        (ModelSpec("cnn", params={"channels": [4, 4, 4]}), (3, 16, 16)),
        (ModelSpec("cnn", params={"channels": [8], "kernel_size": 5}), (1, 5, 7)),
    ],
    ids=str,
)
def test_builtin_models_map_a_batch_to_one_logit_per_class(spec: ModelSpec, input_shape: tuple[int, ...]) -> None:
    model = build_model(spec, input_shape, num_classes=3)
    assert model(torch.randn(5, *input_shape)).shape == (5, 3)


def test_mlp_hidden_layers_are_as_declared() -> None:
    model = build_model(ModelSpec("mlp", params={"hidden": [64, 32]}), (30,), 2)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(30, 64), (64, 32), (32, 2)]


@pytest.mark.parametrize(
    ("spec", "input_shape", "message"),
    [
        (ModelSpec("resnet"), (4,), "unknown architecture 'resnet'; built-ins are ['cnn', 'mlp', 'transformer']"),
        (ModelSpec("cnn"), (30,), "cnn needs image-shaped samples"),
        (ModelSpec("mlp", params={"hidden": [0]}), (4,), "hidden must be a list of positive integers"),
        (ModelSpec("mlp", params={"activation": "swishy"}), (4,), "unknown activation 'swishy'"),
        (ModelSpec("mlp", params={"depth": 3}), (4,), "unexpected keyword argument 'depth'"),
    ],
)
def test_bad_builtin_specs_say_what_is_wrong(spec: ModelSpec, input_shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ModelBuildError) as info:
        build_model(spec, input_shape, 2)
    assert message in str(info.value)


def test_exactly_one_of_architecture_and_entrypoint() -> None:
    with pytest.raises(ModelBuildError, match="exactly one"):
        ModelSpec("mlp", "pkg.mod:build")
    with pytest.raises(ModelBuildError, match="exactly one"):
        ModelSpec()


def test_custom_entrypoint_builds_with_its_params(custom_module: Callable[[str], str]) -> None:
    name = custom_module(
        """
        import math
        from torch import nn

        def build(input_shape, num_classes, *, width):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.Linear(width, num_classes))
        """
    )
    model = build_model(ModelSpec(entrypoint=f"{name}:build", params={"width": 7}), (2, 3), 4)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [7, 4]
    assert model(torch.randn(2, 2, 3)).shape == (2, 4)


def test_entrypoint_that_fails_to_import_names_the_module_and_the_cause(custom_module: Callable[[str], str]) -> None:
    with pytest.raises(ModelBuildError) as info:
        build_model(ModelSpec(entrypoint="not_installed_pkg.models:build"), (4,), 2)
    assert "cannot import module 'not_installed_pkg.models'" in str(info.value)
    assert "No module named 'not_installed_pkg'" in str(info.value)
    assert "worker image" in str(info.value)

    broken = custom_module("import not_a_dependency_either\n")
    with pytest.raises(ModelBuildError, match="No module named 'not_a_dependency_either'"):
        build_model(ModelSpec(entrypoint=f"{broken}:build"), (4,), 2)


@pytest.mark.parametrize(
    ("source", "attribute", "message"),
    [
        ("def build(input_shape, num_classes): pass\n", "make", "has no attribute 'make'"),
        ("build = 3\n", "build", "'build' is not callable"),
        ("def build(input_shape, num_classes): return 'a model'\n", "build", "returned str, not a torch.nn.Module"),
        ("def build(input_shape, num_classes): raise ValueError('bad shape')\n", "build", "bad shape"),
    ],
)
def test_bad_entrypoints_give_clear_errors(
    custom_module: Callable[[str], str], source: str, attribute: str, message: str
) -> None:
    name = custom_module(source)
    with pytest.raises(ModelBuildError) as info:
        build_model(ModelSpec(entrypoint=f"{name}:{attribute}"), (4,), 2)
    assert message in str(info.value)
