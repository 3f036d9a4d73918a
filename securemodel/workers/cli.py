"""``securemodel-worker``: the command line of every pod the operator runs.

This module defines the arguments and stays free of torch (``--help`` is fast, and the slim
operator image can import it); each subcommand's implementation is imported when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from securemodel.workers.arguments import (
    artifact_digest,
    binding_arguments,
    binding_field,
    count,
    dp_arguments,
    finetune_arguments,
    fraction,
    json_object,
    training_mode_problem,
)
from securemodel.workers.federated.arguments import add_aggregate_arguments, add_client_arguments
from securemodel.workers.isolation import add_arguments as add_isolation_arguments
from securemodel.workers.serve import add_serve_arguments, run_serve

DESCRIPTION = (
    "Entrypoints of the pods the securemodel operator runs. The operator decides every parameter, "
    "including the DP-SGD noise multiplier, sample rate and number of steps; a worker never chooses "
    "privacy parameters itself. train and compress print their result as one JSON line and write it "
    "to the termination log."
)
TERMINATION_LOG = "/dev/termination-log"


def _run_train(args: argparse.Namespace) -> int:
    from securemodel.workers.train import run_train

    return run_train(args)


def _run_compress(args: argparse.Namespace) -> int:
    from securemodel.workers.compress import run_compress

    return run_compress(args)


def _run_serve(args: argparse.Namespace) -> int:
    run_serve(args)
    return 0


def _run_fl_aggregate(args: argparse.Namespace) -> int:
    from securemodel.workers.federated.aggregate import run_aggregate

    return run_aggregate(args)


def _run_await_isolation(args: argparse.Namespace) -> int:
    from securemodel.workers.isolation import run

    return run(args)


def _run_fl_client(args: argparse.Namespace) -> int:
    from securemodel.workers.federated.supernode import run_client

    return run_client(args)


def _termination_log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=Path(TERMINATION_LOG),
        help="file the result is also written to, if it exists",
    )


def _common_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-key-file", type=Path, required=True, help="the model's data key: a file of the mounted Secret"
    )
    parser.add_argument(
        "--data-root", type=Path, default=Path("/data"), help="where the PVC of a pvc:// source is mounted"
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=Path(TERMINATION_LOG),
        help="file the result is also written to, if it exists",
    )


def _train_arguments(train: argparse.ArgumentParser) -> None:
    model = train.add_mutually_exclusive_group(required=True)
    model.add_argument("--architecture", help="a built-in model: mlp or cnn")
    model.add_argument("--entrypoint", help="a builder callable, module:function")
    train.add_argument("--params", type=json_object, default={}, help="builder keyword arguments as JSON")
    train.add_argument("--data-source", required=True, help="builtin://<name>[?shard=i&of=n] or pvc://<claim>/<path>")
    train.add_argument("--data-samples", type=count, help="examples in a pvc:// file (spec.data.samples)")
    train.add_argument("--data-schema", type=json.loads, help="spec.data.schema as JSON (required with pvc://)")
    train.add_argument("--data-masking", type=json.loads, help="spec.data.masking as JSON")
    train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    train.add_argument("--seed", type=int, default=0, help="model initialization (DP-SGD's sampling and noise are always secret)")
    finetune_arguments(train)
    dp_arguments(train)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA if available")
    train.add_argument("--output", type=Path, required=True, help="path of the new encrypted model artifact")
    binding_arguments(train, version=False)
    _common_worker_arguments(train)


def _compress_arguments(compress: argparse.ArgumentParser) -> None:
    compress.add_argument("--input", type=Path, required=True, help="encrypted trained artifact")
    compress.add_argument("--output", type=Path, required=True, help="path of the new encrypted compressed artifact")
    compress.add_argument("--sparsity", type=fraction, default=0.0, help="fraction of weights set to zero")
    compress.add_argument("--quantization", choices=["int8", "none"], default="none")
    compress.add_argument(
        "--evaluation-source",
        help="spec.data.evaluation.source, data the user declared public: accuracy is measured on all of it "
        "(a pvc:// file under --data-root); without it, no accuracy is measured",
    )
    compress.add_argument("--evaluation-samples", type=count, help="examples in a pvc:// evaluation file")
    round_input = compress.add_argument_group("a FederatedRound's global model as --input (spec.model.fromRound)")
    round_input.add_argument(
        "--from-round",
        action="store_true",
        help="--input is a round's global model: authenticated under --input-key-file (the round's data key) as "
        "its aggregator wrote it after its final round (--input-round-uid, --input-round), with --input-digest",
    )
    round_input.add_argument("--input-key-file", type=Path, help="the round's data key (with --from-round)")
    round_input.add_argument(
        "--input-round-uid", type=binding_field, help="metadata.uid of the round (with --from-round)"
    )
    round_input.add_argument(
        "--input-round", type=count, help="the round's spec.rounds: --input must be its final global model"
    )
    round_input.add_argument("--input-digest", type=artifact_digest, help="sha256 the round's aggregator reported")
    round_input.add_argument(
        "--training-source",
        action="append",
        default=[],
        help="each silo's training data (repeated): the evaluation source must be kept apart from every one",
    )
    binding_arguments(compress, version=True)
    _common_worker_arguments(compress)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``securemodel-worker`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="securemodel-worker", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model with DP-SGD (or, --public, without) and write the encrypted artifact"
    )
    _train_arguments(train)
    train.set_defaults(run=_run_train, check=training_mode_problem)

    compress = commands.add_parser("compress", help="prune and quantise a trained artifact")
    _compress_arguments(compress)
    compress.set_defaults(run=_run_compress)

    serve = commands.add_parser("serve", help="serve an artifact over mutual TLS (Open Inference Protocol v2)")
    add_serve_arguments(serve)
    serve.set_defaults(run=_run_serve)

    aggregate = commands.add_parser("fl-aggregate", help="run a federated round's SuperLink and ServerApp (FedAvg, SecAgg+)")
    add_aggregate_arguments(aggregate)
    _termination_log_argument(aggregate)
    aggregate.set_defaults(run=_run_fl_aggregate)

    client = commands.add_parser("fl-client", help="run one silo's SuperNode: DP-SGD updates, submitted masked")
    add_client_arguments(client)
    _termination_log_argument(client)
    client.set_defaults(run=_run_fl_client)

    gate = commands.add_parser(
        "await-isolation", help="init container: wait until the pod's NetworkPolicy blocks the API server"
    )
    add_isolation_arguments(gate)
    _termination_log_argument(gate)
    gate.set_defaults(run=_run_await_isolation)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = args.check(args) if "check" in args else None
    if problem is not None:
        parser.error(f"{args.command}: {problem}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
