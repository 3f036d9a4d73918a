"""``securemodel-worker``: the command line of every pod the operator runs."""

import argparse
import json
import sys

DESCRIPTION = (
    "Entrypoints of the pods the securemodel operator runs. The operator decides every parameter, "
    "including the DP-SGD noise multiplier, sample rate and number of steps; a worker never chooses "
    "privacy parameters itself. In this version each subcommand parses its arguments and prints them as JSON."
)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not ≥ 1")
    return value


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def _dp_arguments(parser: argparse.ArgumentParser) -> None:
    """The DP-SGD parameters the operator calibrated; the worker must honour them exactly."""
    dp = parser.add_argument_group("DP-SGD (calibrated by the operator)")
    dp.add_argument("--noise-multiplier", type=_positive, required=True, help="σ")
    dp.add_argument("--sample-rate", type=_rate, required=True, help="Poisson sampling rate q")
    dp.add_argument("--steps", type=_count, required=True, help="optimiser steps to run, no more")
    dp.add_argument("--max-grad-norm", type=_positive, required=True, help="per-sample clipping norm")
    dp.add_argument("--learning-rate", type=_positive, default=0.1)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``securemodel-worker`` and its five subcommands."""
    parser = argparse.ArgumentParser(prog="securemodel-worker", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model with DP-SGD and write the encrypted artifact")
    model = train.add_mutually_exclusive_group(required=True)
    model.add_argument("--architecture", help="a built-in model, e.g. mlp")
    model.add_argument("--entrypoint", help="a builder callable, module:function")
    train.add_argument("--params", type=_json_object, default={}, help="builder keyword arguments as JSON")
    train.add_argument("--data-source", required=True, help="builtin://<name>[?shard=i&of=n] or pvc://<claim>/<path>")
    train.add_argument("--validation-split", type=_fraction, default=0.2)
    train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    train.add_argument("--seed", type=int, default=0)
    _dp_arguments(train)
    train.add_argument("--output", required=True, help="path of the encrypted model artifact")

    compress = commands.add_parser("compress", help="prune and quantise a trained artifact")
    compress.add_argument("--input", required=True, help="encrypted artifact to compress")
    compress.add_argument("--output", required=True, help="encrypted compressed artifact")
    compress.add_argument("--sparsity", type=_fraction, default=0.0, help="fraction of weights set to zero")
    compress.add_argument("--quantization", choices=["int8", "none"], default="none")

    serve = commands.add_parser("serve", help="serve an artifact over mutual TLS (Open Inference Protocol v2)")
    serve.add_argument("--model", required=True, help="encrypted artifact to serve")
    serve.add_argument("--name", required=True, help="model name in /v2/models/<name>")
    serve.add_argument("--tls-dir", required=True, help="directory with tls.crt, tls.key and ca.crt")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--metrics-port", type=int, default=9090)

    aggregate = commands.add_parser("fl-aggregate", help="aggregate one federated round (sees only the masked sum)")
    aggregate.add_argument("--clients", required=True, type=lambda s: s.split(","), help="comma-separated silos")
    aggregate.add_argument("--min-clients", type=_count, required=True)
    aggregate.add_argument("--threshold", type=_count, help="survivors needed to unmask (secure aggregation)")
    aggregate.add_argument("--port", type=int, default=8443)
    aggregate.add_argument("--output", required=True, help="encrypted global model artifact")

    client = commands.add_parser("fl-client", help="train one silo's update and submit it masked")
    client.add_argument("--name", required=True, help="this silo's name")
    client.add_argument("--aggregator", required=True, help="URL of the aggregator")
    client.add_argument("--data-source", required=True)
    client.add_argument("--local-epochs", type=_count, default=1)
    _dp_arguments(client)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and print the parsed configuration as JSON."""
    args = build_parser().parse_args(argv)
    json.dump(vars(args), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
