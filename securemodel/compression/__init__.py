"""Model compression: layer-adaptive magnitude pruning, int8 per-channel quantization, compact encoding.

Pure numpy on state dictionaries (name → array); nothing here knows about torch modules or
Kubernetes. :func:`compress_state` turns a dense float32 state into its stored form and
:func:`decompress_state` reads it back as the dense float32 state a model is built from.
"""

from securemodel.compression.encoding import (
    QUANTIZATIONS,
    CompressedState,
    EncodingError,
    Quantization,
    compress_state,
    decompress_state,
)

__all__ = [
    "QUANTIZATIONS",
    "CompressedState",
    "EncodingError",
    "Quantization",
    "compress_state",
    "decompress_state",
]
