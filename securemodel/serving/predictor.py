"""The interface between a served model and the server."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from securemodel.data.encoding import TableEncoding


class Predictor(Protocol):
    """A classifier the serve worker exposes as ``/v2/models/<name>``.

    Plain attributes satisfy the read-only members. The server validates every request against
    ``input_shape`` (or, for a table model, encodes it with ``table``) before calling
    ``predict_proba``, and calls it from one worker thread at a time, off the event loop.
    """

    @property
    def name(self) -> str:
        """The model name in the OIP URLs."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(30,)`` or ``(1, 8, 8)``."""

    @property
    def num_classes(self) -> int:
        """The number of classes."""

    @property
    def table(self) -> TableEncoding | None:
        """A table model's encoding: inputs come by column name and are encoded with it; None: one tensor, ``input``."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: float32 ``(batch, *input_shape)`` in, float32 ``(batch, num_classes)`` out."""
