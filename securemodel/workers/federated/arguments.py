"""Arguments of ``fl-aggregate`` and ``fl-client`` (no torch, no flwr: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from securemodel.workers.arguments import binding_field, count, json_object, positive, rate

SUPERLINK_PORT = 9092
CLIENTAPPIO_PORT = 9094


def add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    """The aggregator pod's arguments (see :mod:`securemodel.workers.federated.aggregate`)."""
    parser.add_argument(
        "--tls-dir",
        type=Path,
        required=True,
        help="the SuperLink's TLS Secret: tls.crt, tls.key, ca.crt",
    )
    parser.add_argument(
        "--silo-keys-dir",
        type=Path,
        required=True,
        help="one OpenSSH public key per silo, named <silo>.pub",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=SUPERLINK_PORT,
        help="the SuperLink's port (Fleet API for the silos)",
    )
    parser.add_argument(
        "--round-uid",
        type=binding_field,
        required=True,
        help="metadata.uid of the FederatedRound: each round-NNN.model is bound to it and NNN",
    )
    parser.add_argument("--rounds", type=count, default=1)
    parser.add_argument(
        "--min-clients",
        type=count,
        help="silos that must submit in each round (default: all)",
    )
    secure = parser.add_mutually_exclusive_group()
    secure.add_argument(
        "--secure-aggregation",
        dest="secure_aggregation",
        action="store_true",
        default=True,
    )
    secure.add_argument(
        "--no-secure-aggregation",
        dest="secure_aggregation",
        action="store_false",
        help="plain FedAvg (comparison only)",
    )
    parser.add_argument(
        "--num-shares",
        type=int,
        default=0,
        help="SecAgg+ shares per key (default: every silo)",
    )
    parser.add_argument(
        "--threshold",
        type=count,
        help="SecAgg+ reconstruction threshold (default: min clients)",
    )
    parser.add_argument(
        "--max-weight",
        type=count,
        default=1000,
        help="largest silo training set (SecAgg+ weight bound)",
    )
    parser.add_argument("--learning-rate", type=positive, default=0.1)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--initial-model",
        type=Path,
        help="encrypted model artifact to start from (with --initial-model-key-file)",
    )
    start.add_argument(
        "--initial-architecture",
        help="or a built-in architecture to start from fresh weights (with --initial-source)",
    )
    parser.add_argument(
        "--initial-model-key-file",
        type=Path,
        help="the data key of --initial-model",
    )
    parser.add_argument(
        "--initial-round-uid",
        type=binding_field,
        help="metadata.uid of the FederatedRound that wrote --initial-model",
    )
    parser.add_argument(
        "--initial-round",
        type=count,
        help="that round's spec.rounds: --initial-model must be its final global model",
    )
    parser.add_argument(
        "--initial-params",
        type=json_object,
        default={},
        help="builder keyword arguments of --initial-architecture as JSON",
    )
    parser.add_argument(
        "--initial-source",
        help="builtin:// source whose published metadata (shape, classes, bounds) sizes the fresh model; no data is read",
    )
    parser.add_argument(
        "--data-key-file",
        type=Path,
        required=True,
        help="the round's data key for the global models",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="where round-NNN.model and result.json go",
    )
    parser.add_argument(
        "--stage-timeout",
        type=positive,
        default=300.0,
        help="seconds to wait for silos per stage",
    )
    evaluation = parser.add_argument_group(
        "public evaluation (the only accuracy a round reports; without --evaluation-source none is measured)"
    )
    evaluation.add_argument(
        "--evaluation-source",
        help="data the round declares public: builtin://<dataset>?part=evaluation or pvc://<claim>/<path>",
    )
    evaluation.add_argument("--evaluation-samples", type=count, help="examples in a pvc:// evaluation file")
    evaluation.add_argument(
        "--evaluation-root",
        type=Path,
        default=Path("/data"),
        help="where the volume of a pvc:// evaluation file is mounted",
    )
    evaluation.add_argument(
        "--silo-source",
        dest="silo_sources",
        action="append",
        default=[],
        help="a silo's data source (repeated; never read): the evaluation source must be kept apart from each",
    )
    evaluation.add_argument(
        "--data-schema",
        type=json_object,
        help="the silos' spec.data.schema as JSON, to encode a pvc:// evaluation file",
    )
    parser.add_argument("--timeout", type=positive, default=600.0, help="seconds the whole run may take")
    parser.add_argument(
        "--startup-timeout",
        type=positive,
        default=120.0,
        help="seconds for the SuperLink to start",
    )
    parser.add_argument("--poll-interval", type=positive, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="writable scratch directory (default: a new temporary one)",
    )


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """One silo pod's arguments (see :mod:`securemodel.workers.federated.supernode`)."""
    parser.add_argument("--name", required=True, help="this silo's name")
    parser.add_argument("--superlink", required=True, help="the SuperLink's host:port")
    parser.add_argument("--ca-file", type=Path, required=True, help="the round's CA certificate")
    parser.add_argument(
        "--auth-key-file",
        type=Path,
        required=True,
        help="this silo's OpenSSH private key",
    )
    parser.add_argument("--data-source", required=True)
    parser.add_argument(
        "--data-samples",
        type=count,
        help="examples in a pvc:// file (spec.data.samples)",
    )
    parser.add_argument("--data-root", type=Path, default=Path("/data"))
    parser.add_argument(
        "--data-schema",
        type=json_object,
        help="spec.data.schema as JSON (required with pvc://); the silo trains on all of its data",
    )
    dp = parser.add_argument_group("DP-SGD (calibrated by the operator for all rounds)")
    dp.add_argument("--noise-multiplier", type=positive, required=True, help="σ")
    dp.add_argument("--sample-rate", type=rate, required=True, help="Poisson sampling rate q")
    dp.add_argument(
        "--steps-per-round",
        type=count,
        required=True,
        help="noisy steps in each round, no more",
    )
    dp.add_argument(
        "--rounds",
        type=count,
        required=True,
        help="rounds σ was calibrated for; the silo trains in no more",
    )
    dp.add_argument(
        "--max-grad-norm",
        type=positive,
        required=True,
        help="per-sample clipping norm C",
    )
    parser.add_argument(
        "--allow-plain-aggregation",
        action="store_true",
        help="also submit unmasked updates (comparison only)",
    )
    parser.add_argument(
        "--progress-file",
        type=Path,
        default=Path(tempfile.gettempdir()) / "securemodel-fl-progress.json",
        help="writable file that counts rounds trained and steps run",
    )
    parser.add_argument(
        "--runtime-port",
        type=int,
        default=CLIENTAPPIO_PORT,
        help="ClientAppIO port on 127.0.0.1",
    )
    parser.add_argument(
        "--restart-window",
        type=positive,
        default=900.0,
        help="seconds during which an exited SuperNode is restarted",
    )
