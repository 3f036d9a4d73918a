"""Training WITHOUT differential privacy, for a SecureModel whose spec declares its data public.

Only the operator selects this (``securemodel-worker train --public``), and only for a model whose
``spec.privacy`` is ``{public: true}`` and whose data no PrivacyBudget of its namespace protects;
no claim is made for it, so nothing is charged whatever the pod does. There is no privacy
guarantee here: every step is the mean cross-entropy gradient of a mini-batch, unclipped and
unnoised. Each epoch visits every example once, in an order shuffled by the global torch
generator (seeded by ``--seed``, so a run is reproducible; the data is public).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Optimizer = Literal["sgd", "adam"]


@dataclass(frozen=True)
class PlainConfig:
    """The spec's epochs, batch size and optimiser."""

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: Optimizer = "sgd"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be > 0")


@dataclass
class PlainProgress:
    """Updated as training runs, so a failure still tells how far it got."""

    steps: int = 0
    epochs: int = 0


@dataclass(frozen=True)
class PlainReport:
    steps: int
    epochs: int
    device: str
    train_examples: int


def train_plain(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: PlainConfig,
    *,
    device: torch.device,
    progress: PlainProgress | None = None,
) -> PlainReport:
    """Train ``model`` in place on ``(x, y)`` (network inputs, integer labels) with plain mini-batch SGD or Adam,
    updating only parameters that require gradients; see the module doc."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    progress = progress if progress is not None else PlainProgress()
    n = len(y)
    inputs = torch.as_tensor(x, dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, dtype=torch.long, device=device)
    model.to(device).train()
    optimizer = (torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam)(params, lr=config.learning_rate)
    for _ in range(config.epochs):
        order = torch.randperm(n).to(device)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
            progress.steps += 1
        progress.epochs += 1
    model.eval()
    return PlainReport(progress.steps, progress.epochs, str(device), n)
