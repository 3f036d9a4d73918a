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
  ``2π·k'·2^-53``, computed in float64 and rounded once to the parameter's dtype. Box-Muller on
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


class SecretRandom:
    """A per-run CSPRNG (AES-256-CTR, key from ``os.urandom``) for DP-SGD's sampling and noise; see the module doc."""

    def __init__(self) -> None:
        # The only place the worker creates DP-SGD randomness: a fresh secret key, never exposed.
        self._stream = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()

    def _words(self, count: int) -> np.ndarray:
        """``count`` independent uniform integers on [0, 2^53) (the top 53 bits of keystream words)."""
        keystream = self._stream.update(bytes(_WORD * count))
        return np.frombuffer(keystream, dtype="<u8") >> np.uint64(64 - _MANTISSA)

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
        words = self._words(4 * count)
        radius = torch.from_numpy(words[: 2 * count] + 1.0).mul_(2.0**-_MANTISSA).log_().mul_(-2.0).sqrt_()
        angle = torch.from_numpy(words[2 * count :].astype(np.float64)).mul_(2 * math.pi * 2.0**-_MANTISSA)
        pairs = radius.mul_(angle.cos() + angle.sin())  # z1 + z2 of each Box-Muller pair
        noise = (pairs[:count] + pairs[count:]).mul_(std / 2)
        return noise.to(dtype=dtype, device=device)
