"""Argument types and argument groups shared by the ``securemodel-worker`` subcommands (no torch here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


DP_OPTIONS = ("noise_multiplier", "sample_rate", "steps", "max_grad_norm")
PUBLIC_OPTIONS = ("epochs", "batch_size")


def dp_arguments(parser: argparse.ArgumentParser) -> None:
    """The DP-SGD parameters the operator calibrated, which the worker must honour exactly, or (``--public``, for a
    model the operator let train without differential privacy) the epochs and batch size of plain training.
    Exactly one of the two sets is given (:func:`training_mode_problem`)."""
    parser.add_argument("--learning-rate", type=positive, default=0.1)
    dp = parser.add_argument_group("DP-SGD (calibrated by the operator; all four, without --public)")
    dp.add_argument("--noise-multiplier", type=positive, help="σ")
    dp.add_argument("--sample-rate", type=rate, help="Poisson sampling rate q over the training split")
    dp.add_argument("--steps", type=count, help="noisy optimizer steps to run, no more")
    dp.add_argument("--max-grad-norm", type=positive, help="per-sample clipping norm C")
    public = parser.add_argument_group("training without differential privacy (set by the operator only for "
                                       "spec.privacy.public, on data no budget protects)")  # fmt: skip
    public.add_argument("--public", action="store_true", help="plain SGD or Adam: no clipping, no noise, no ε")
    public.add_argument("--epochs", type=count, help="passes over the data (with --public)")
    public.add_argument("--batch-size", type=count, help="examples per step (with --public)")


def training_mode_problem(args: argparse.Namespace) -> str | None:
    """Why the train arguments mix or miss the DP-SGD and the ``--public`` options; None if they are one mode."""
    options = DP_OPTIONS if not args.public else PUBLIC_OPTIONS
    others = PUBLIC_OPTIONS if not args.public else DP_OPTIONS
    missing = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name) is None]
    mixed = [f"--{name.replace('_', '-')}" for name in others if getattr(args, name) is not None]
    mode = "--public" if args.public else "DP-SGD (without --public)"
    if missing:
        return f"{mode} needs {', '.join(missing)}"
    if mixed:
        return f"{mode} does not take {', '.join(mixed)}"
    return None


def names(text: str) -> list[str]:
    """A comma-separated list of non-empty parameter or module names, e.g. ``net.0,net.2``."""
    items = text.split(",")
    if not all(item and item == item.strip() for item in items):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of names")
    return items


def string_map(text: str) -> dict[str, str]:
    """A JSON object whose values are strings (an artifact binding's fields)."""
    value = json_object(text)
    if not all(isinstance(v, str) for v in value.values()):
        raise argparse.ArgumentTypeError("not a JSON object of strings")
    return {k: str(v) for k, v in value.items()}


def finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Where training starts and which parameters it trains (:mod:`securemodel.workers.finetune`)."""
    start = parser.add_argument_group("starting weights (default: the builder's initialisation)")
    source = start.add_mutually_exclusive_group()
    source.add_argument("--init-artifact", type=Path, help="an encrypted fp32 model artifact to start from")
    source.add_argument("--init-file", type=Path, help="a plain, public torch state_dict to start from")
    start.add_argument("--init-key-file", type=Path, help="the data key of --init-artifact's model")
    start.add_argument(
        "--init-binding",
        type=string_map,
        help="binding fields --init-artifact was written for, as JSON (for a round's global model: its uid and "
        "final round number, see round_binding)",
    )
    start.add_argument("--init-digest", type=artifact_digest, help="the digest --init-artifact must have")
    trained = parser.add_argument_group("trained parameters (default: all)")
    trained.add_argument("--freeze", type=names, default=[], help="parameter-name prefixes that stay fixed")
    trained.add_argument(
        "--lora-rank", type=count, help="LoRA adapters of this rank (with --lora-alpha and --lora-targets)"
    )
    trained.add_argument("--lora-alpha", type=positive, help="LoRA scaling numerator: adapters scale by alpha/rank")
    trained.add_argument("--lora-targets", type=names, help="Linear modules that get adapters, by name")


def binding_arguments(parser: argparse.ArgumentParser, *, version: bool) -> None:
    """What the model's artifacts are bound to (:func:`model_binding`), from the operator: the SecureModel's
    ``metadata.uid``, its training version and (``version``) its version, i.e. training plus compression."""
    binding = parser.add_argument_group("artifact binding (set by the operator)")
    binding.add_argument("--model-uid", required=True, type=binding_field, help="metadata.uid of the SecureModel")
    binding.add_argument("--training-version", required=True, type=binding_field, help="the spec's training version")
    if version:
        binding.add_argument("--model-version", required=True, type=binding_field, help="the spec's version")


def model_binding(uid: str, training: str, encoding: str, version: str | None = None) -> dict[str, str]:
    """The fields a model artifact is bound to (:mod:`securemodel.crypto.artifacts`).

    The trained (``fp32``) artifact is bound to the model's uid and training version; a
    ``compressed`` one also to the version (training plus compression) it was made for. A
    reader that expects another model, version or encoding cannot authenticate the file.
    """
    if (encoding == "compressed") != (version is not None):
        raise ValueError(f"a {encoding} artifact is bound to a version iff it is compressed")
    binding = {"uid": uid, "training": training, "encoding": encoding}
    return binding if version is None else {**binding, "version": version}


def round_binding(uid: str, round_number: int) -> dict[str, str]:
    """The fields a FederatedRound's global model is bound to (:mod:`securemodel.crypto.artifacts`).

    The model after round ``round_number`` of the FederatedRound with ``metadata.uid`` ``uid``
    (0: the starting model its aggregator built). A reader that expects the round's final model
    (``spec.rounds``) cannot authenticate an earlier round's file of the same run, nor any file of
    another round, even under the same key.
    """
    if round_number < 0:
        raise ValueError(f"round number {round_number} is negative")
    return {"uid": uid, "round": str(round_number)}


def binding_field(text: str) -> str:
    """A uid or version: letters, digits and ``-._:`` (what an artifact binding may hold)."""
    if not text or len(text) > 253 or not all(c.isascii() and (c.isalnum() or c in "-._:") for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a uid or version (letters, digits and -._:)")
    return text


def artifact_digest(text: str) -> str:
    """``sha256:`` and 64 lower-case hex digits, as ``write_artifact`` returns it."""
    prefix, _, digits = text.partition(":")
    if prefix != "sha256" or len(digits) != 64 or not all(c in "0123456789abcdef" for c in digits):
        raise argparse.ArgumentTypeError(f"{text!r} is not sha256:<64 lower-case hex digits>")
    return text
