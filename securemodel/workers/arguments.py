"""Argument types and argument groups shared by the ``securemodel-worker`` subcommands (no torch here)."""

from __future__ import annotations

import argparse
import json


def fraction(text: str) -> float:
    """A float in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def rate(text: str) -> float:
    """A float in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def count(text: str) -> int:
    """An integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not ≥ 1")
    return value


def positive(text: str) -> float:
    """A float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def json_object(text: str) -> dict[str, object]:
    """A JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def dp_arguments(parser: argparse.ArgumentParser) -> None:
    """The DP-SGD parameters the operator calibrated; the worker must honour them exactly."""
    dp = parser.add_argument_group("DP-SGD (calibrated by the operator)")
    dp.add_argument("--noise-multiplier", type=positive, required=True, help="σ")
    dp.add_argument("--sample-rate", type=rate, required=True, help="Poisson sampling rate q over the training split")
    dp.add_argument("--steps", type=count, required=True, help="noisy optimizer steps to run, no more")
    dp.add_argument("--max-grad-norm", type=positive, required=True, help="per-sample clipping norm C")
    dp.add_argument("--learning-rate", type=positive, default=0.1)
