"""Frozen parameters and LoRA adapters under DP-SGD: only the trained parameters are clipped, noised and updated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from securemodel.models import ModelSpec, build_model
from securemodel.workers import dpsgd
from securemodel.workers.dpsgd import ClippingMode, DPSGDConfig, make_clipper, train_dp_sgd
from securemodel.workers.finetune import FreezeError, LoraError, LoraSettings, add_lora, freeze, merge_lora
from securemodel.workers.secret_random import SecretRandom

torch.set_num_threads(1)  # the unit tests share two cores with everything else

CPU = torch.device("cpu")
MODES: list[ClippingMode] = ["bookkeeping", "opacus-hooks"]
CONFIG = DPSGDConfig(noise_multiplier=1.0, sample_rate=0.2, steps=8, max_grad_norm=0.5, learning_rate=0.1)


def mlp(seed: int = 0) -> nn.Module:
    """Flatten, Linear "1", ReLU, Linear "3", ReLU, Linear "5" for 6 features and 3 classes."""
    torch.manual_seed(seed)
    return build_model(ModelSpec("mlp", params={"hidden": [8, 8]}), (6,), 3)


def toy_data(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class EmptyBatches(SecretRandom):
    """The secret source, drawing no examples (every gradient is pure noise) and recording the noise it draws."""

    drawn: list[torch.Tensor] = []

    def poisson_sample(self, n: int, q: float) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def gaussian(self, count: int, std: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        noise = super().gaussian(count, std, dtype=dtype, device=device)
        EmptyBatches.drawn.append(noise.clone())
        return noise


@pytest.mark.parametrize("mode", MODES)
def test_frozen_parameters_are_bit_identical_after_dp_training(mode: ClippingMode) -> None:
    model = mlp()
    freeze(model, ["1", "5.bias"])
    before = snapshot(model)
    train_dp_sgd(model, *toy_data(), CONFIG, device=CPU, mode=mode)
    after = snapshot(model)
    for name in ("1.weight", "1.bias", "5.bias"):
        assert torch.equal(before[name], after[name]), name
    for name in ("3.weight", "3.bias", "5.weight"):
        assert not torch.equal(before[name], after[name]), name


@pytest.mark.parametrize("mode", MODES)
def test_each_example_is_clipped_over_the_trained_parameters_only(mode: ClippingMode) -> None:
    model = mlp()
    freeze(model, ["3"])
    x, y = (torch.as_tensor(a) for a in toy_data(16))
    clipper = make_clipper(model, mode)
    try:
        clipped = clipper.clipped_sum(x, y, 0.5)
    finally:
        clipper.close()
    assert [p.shape for p in clipper.params] == [p.shape for n, p in model.named_parameters() if not n.startswith("3.")]
    expected = []
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, clipper.params)
        expected.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
    torch.testing.assert_close(clipped.norms, torch.stack(expected), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("lora", [False, True])
def test_the_secret_source_draws_the_noise_of_exactly_the_trained_parameters(
    lora: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    freeze(model, ["1"])
    if lora:
        add_lora(model, LoraSettings(rank=2, alpha=4.0, targets=("3",)))
    trained = [p for p in model.parameters() if p.requires_grad]
    before = snapshot(model)
    EmptyBatches.drawn = []
    monkeypatch.setattr(dpsgd, "SecretRandom", EmptyBatches)
    x, y = toy_data()
    train_dp_sgd(model, x, y, CONFIG, device=CPU, mode="bookkeeping")

    assert len(EmptyBatches.drawn) == CONFIG.steps
    assert all(len(z) == sum(p.numel() for p in trained) for z in EmptyBatches.drawn)
    # SGD on pure noise: each trained parameter moved by exactly -lr · Σ_steps z / (q·n), the frozen ones not at all
    total = torch.stack(EmptyBatches.drawn).sum(0) * (-CONFIG.learning_rate / (CONFIG.sample_rate * len(y)))
    moved = torch.cat([(p.detach() - before[name]).flatten() for name, p in model.named_parameters() if p.requires_grad])
    torch.testing.assert_close(moved, total, rtol=1e-4, atol=1e-6)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p.detach(), before[name]), name


def test_lora_training_changes_only_the_adapters_and_merges_into_the_plain_architecture() -> None:
    model = mlp()
    plain_keys = list(model.state_dict())
    add_lora(model, LoraSettings(rank=2, alpha=4.0, targets=("1", "3", "5")))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"{t}.lora_{ab}.default.weight" for t in ("1", "3", "5") for ab in ("A", "B")
    }
    before = snapshot(model)
    x, y = toy_data()
    report = train_dp_sgd(model, x, y, CONFIG, device=CPU, mode="bookkeeping")
    after = snapshot(model)
    assert report.clipping_mode == "bookkeeping"
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (".lora_" in name), name  # adapters really train (opacus#820: they silently did not)

    inputs = torch.as_tensor(x[:32])
    with torch.no_grad():
        adapted = model(inputs)
    merge_lora(model)
    assert list(model.state_dict()) == plain_keys
    assert not any(type(m).__module__.startswith("peft") for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), adapted, rtol=1e-5, atol=1e-5)
    plain = mlp(seed=1)
    plain.load_state_dict(model.state_dict(), strict=True)


def test_lora_keeps_untargeted_parameters_trainable_unless_frozen() -> None:
    model = mlp()
    freeze(model, ["1"])
    add_lora(model, LoraSettings(rank=2, alpha=2.0, targets=("3",)))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "3.lora_A.default.weight",
        "3.lora_B.default.weight",
        "5.weight",
        "5.bias",
    }


def test_unknown_prefixes_and_targets_are_refused() -> None:
    with pytest.raises(FreezeError, match="unknown prefix '7'"):
        freeze(mlp(), ["7"])
    with pytest.raises(FreezeError, match="unknown prefix '1.w'"):
        freeze(mlp(), ["1.w"])  # prefixes match whole name components
    with pytest.raises(FreezeError, match="every parameter is frozen"):
        freeze(mlp(), ["1", "3", "5"])
    with pytest.raises(LoraError, match="unknown module '9'"):
        add_lora(mlp(), LoraSettings(2, 2.0, ("9",)))
    with pytest.raises(LoraError, match=r"2 \(ReLU\) is not a Linear layer"):
        add_lora(mlp(), LoraSettings(2, 2.0, ("2",)))
