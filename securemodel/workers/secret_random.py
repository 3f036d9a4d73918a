"""The secret randomness of DP-SGD: Poisson sampling and Gaussian noise that nobody can replay.

DP-SGD's guarantee holds only if the adversary cannot predict which examples a step sampled
or which noise it added. :class:`SecretRandom` is the ONE source of both in the train worker,
whatever the clipping mode; nothing else in the worker draws them.

Source. Opacus' ``secure_mode`` draws from ``/dev/urandom`` through ``torchcsprng``, which has
no release for Python > 3.9 or torch 2 and does not install here. The equivalent used instead:
the keystream of AES-256 in counter mode (``cryptography``/OpenSSL) under a 256-bit key read
from ``os.urandom`` when the object is created — a standard cryptographically secure generator
(the construction of NIST SP 800-90A's CTR_DRBG without reseeding; torchcsprng's own AES
generator is the same idea). Reading ``os.urandom`` for every draw would be the same source at
a tenth of the speed here. The key exists only inside this object's cipher context in the
worker's memory: it is never stored, logged, returned, or derived from any argument, so the
user's ``training.seed`` (which governs initialisation only) tells an
adversary nothing about it, and two runs with identical arguments draw independent streams.
Up to 2^64 blocks (far beyond any run), the keystream is computationally indistinguishable
from uniform bits.

From bits to draws (``k`` = the top 53 bits of a 64-bit keystream word, uniform on [0, 2^53)):

* **Poisson sampling** includes example ``i`` iff its ``k_i < floor(q·2^53)``: independent
  Bernoulli trials with probability ``floor(q·2^53)/2^53``, which is ``q`` rounded down to a
  multiple of 2^-53 (never above ``q``, so the accountant's ``q`` is an upper bound).
* **Gaussian noise** follows Opacus' ``secure_mode`` mitigation of floating-point attacks
  (Holohan & Braghin 2021, §5.1, n = 2): each coordinate is ``(z1 + z2 + z3 + z4) / 2 · std``
  with four standard normals from Box-Muller on ``u = (k + 1)·2^-53 ∈ (0, 1]`` and angle
  ``2π·k'·2^-53``, computed in float64 and rounded once to the parameter's dtype. The keystream
  is always produced on the host by OpenSSL; only its words go to the parameters' device (a GPU),
  where this same formula runs, so no other generator is ever involved. Box-Muller on
  53-bit uniforms cannot exceed ``sqrt(-2 ln 2^-53) ≈ 8.57`` per normal, so each coordinate's
  law is within total variation 4 · P(|N(0,1)| > 8.57) < 5e-17 of N(0, std²); over a run of
  ``steps`` steps and ``P`` parameters that adds at most ``(1 + e^ε) · steps · P · 5e-17`` to δ
  (e.g. 5e-8 for 10^4 steps of a 10^5-parameter model at ε = 2, where δ is 1e-5).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_MANTISSA = 53
_WORD = 8  # bytes per 64-bit keystream word
_BLOCK = 16  # bytes of an AES block
_CHUNK = 1 << 20  # keystream words per cipher call: the reused buffers hold 8 MiB each


class SecretRandom:
    """A per-run CSPRNG (AES-256-CTR, key from ``os.urandom``) for DP-SGD's sampling and noise; see the module doc."""

    def __init__(self) -> None:
        # The only place the worker creates DP-SGD randomness: a fresh secret key, never exposed.
        self._stream = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
        # The keystream is AES-CTR of zeros, written chunk by chunk into one buffer that every draw reuses:
        # allocating (and faulting in) megabytes per step cost about six times the cipher itself (measured).
        self._zeros = b""
        self._out = bytearray()

    def _words(self, count: int) -> np.ndarray:
        """``count`` independent uniform integers on [0, 2^53) (the top 53 bits of keystream words), in a new array."""
        words = np.empty(count, dtype=np.uint64)
        for start in range(0, count, _CHUNK):
            size = _WORD * min(_CHUNK, count - start)
            if len(self._zeros) < size:
                self._zeros = bytes(size)
                self._out = bytearray(size + _BLOCK - 1)  # what ``update_into`` asks of a block cipher's output
            written = self._stream.update_into(memoryview(self._zeros)[:size], self._out)
            if written != size:  # CTR is a stream mode: one keystream byte per input byte, never buffered
                raise RuntimeError(f"AES-CTR wrote {written} bytes for {size}")
            keystream = np.frombuffer(self._out, dtype="<u8", count=size // _WORD)
            np.right_shift(keystream, np.uint64(64 - _MANTISSA), out=words[start : start + size // _WORD])
        return words

    def poisson_sample(self, n: int, q: float) -> np.ndarray:
        """Indices (ascending) of a Poisson sample of ``range(n)``: each included independently with probability ≤ q.

        The probability is ``floor(q·2^53)/2^53``: ``q`` itself whenever ``q·2^53`` is an integer
        (every ``q ≥ 1/2``, every ``q = B/n`` with ``n`` a power of two), below it by < 2^-53 otherwise.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"sample rate must be in [0, 1], got {q}")
        threshold = np.uint64(math.floor(q * 2**_MANTISSA))
        return np.flatnonzero(self._words(n) < threshold)

    def gaussian(self, count: int, std: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``count`` independent draws of N(0, std²) (up to the truncation in the module doc), as a 1-D tensor."""
        # The words go to ``device`` as they are (each < 2^53, so int64 holds it and float64 converts it
        # exactly) and Box-Muller runs there: on a GPU the transcendental functions cost the host nothing.
        words = torch.from_numpy(self._words(4 * count).view(np.int64)).to(device)
        scale = 2.0**-_MANTISSA
        radius = words[: 2 * count].to(torch.float64).add_(1.0).mul_(scale).log_().mul_(-2.0).sqrt_()
        angle = words[2 * count :].to(torch.float64).mul_(2 * math.pi * scale)
        pairs = radius.mul_(angle.cos() + angle.sin())  # z1 + z2 of each Box-Muller pair
        return (pairs[:count] + pairs[count:]).mul_(std / 2).to(dtype=dtype)
