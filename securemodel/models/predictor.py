"""A loaded model that answers ``predict_proba``: what the serve worker and the evaluations use.

:class:`ModelPredictor` satisfies the ``Predictor`` protocol of
:mod:`securemodel.serving.predictor`: ``name``, ``input_shape`` (per sample), ``num_classes``
and ``predict_proba(x)`` mapping float32 ``(batch, *input_shape)`` raw features to float32
``(batch, num_classes)`` class probabilities. The payload's input standardization (if any) is
applied inside, so callers send features as the data source holds them. A model trained on a
table carries its ``table`` encoding, which the server applies to inputs given by column name.
"""

from __future__ import annotations

import numpy as np
import torch

from securemodel.models.serialization import Encoding, ModelRecord, load_record


class ModelPredictor:
    """A model from an fp32 or compressed payload, evaluated on the CPU in inference mode."""

    def __init__(self, record: ModelRecord, name: str) -> None:
        self.name = name
        self.input_shape = record.input_shape
        self.num_classes = record.num_classes
        self.encoding: Encoding = record.encoding
        self.table = record.table
        self._standardization = record.standardization
        self._module = record.build()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits) of a batch; raises ValueError on a wrong shape."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"model {self.name!r} takes inputs of shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got {x.shape}"
            )
        if self._standardization is not None:
            x = self._standardization.apply(x)
        with torch.inference_mode():
            logits = self._module(torch.from_numpy(np.ascontiguousarray(x)))
            return torch.softmax(logits.float(), dim=1).numpy().astype(np.float32, copy=False)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Fraction of ``x`` whose most probable class is ``y``; None for an empty set."""
        if len(y) == 0:
            return None
        return float((self.predict_proba(x).argmax(axis=1) == y).mean())


def load_predictor(payload: bytes, name: str) -> ModelPredictor:
    """Load a decrypted fp32 or compressed model payload as a predictor named ``name``."""
    return ModelPredictor(load_record(payload), name)
