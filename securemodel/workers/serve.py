"""``securemodel-worker serve``: decrypt the model in memory and serve it over mutual TLS until SIGTERM.

The decrypted model never touches the disk, and the data key is read from its mounted Secret
file, never from the command line or the environment.

Before it opens any port, the worker checks that the file is exactly the artifact the operator
means it to serve: its SHA-256 must be ``--artifact-digest`` (recorded from the compress Job's
result) and it must authenticate as the compressed model of ``--model-uid``,
``--training-version`` and ``--model-version`` (:mod:`securemodel.crypto.artifacts`). Any other
file (an older version's artifact copied over this one, the trained fp32 artifact, another
model's), a tampered one or a wrong key stops the worker with exit status 1, the reason on stderr
and the termination message ``{"reason": "ArtifactRejected", "message": ...}``: no request is
answered. An ``--allow-list`` or TLS files that are missing or invalid at start stop it the same
way with reason ``ServeFailed``. Stdout carries the audit trail (one JSON line per request, see
``securemodel.serving.audit``) and nothing else; logs go to stderr.

A model trained on a table is served by column name with the encoding stored in its artifact
(:mod:`securemodel.serving.oip`), so it always matches the weights: the worker takes no schema
or masking argument and never needs the pseudonymization key (identifier columns are no inputs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from securemodel.crypto.artifacts import ArtifactError, read_artifact, read_data_key
from securemodel.serving.predictor import Predictor
from securemodel.serving.server import ServingServer
from securemodel.workers.arguments import artifact_digest, binding_arguments, model_binding
from securemodel.workers.report import TERMINATION_LOG, write_refusal

MODEL_KIND = "model"
# Longer than the Service endpoints and kube-proxy take to stop routing to a terminating pod.
DRAIN_SECONDS = 5.0

Loader = Callable[[bytes, str], Predictor]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``securemodel-worker serve``."""
    parser.add_argument("--artifact", type=Path, required=True, help="encrypted compressed model artifact")
    parser.add_argument(
        "--artifact-digest",
        type=artifact_digest,
        required=True,
        help="sha256:<hex> the operator recorded for the artifact; a file with another digest is refused",
    )
    parser.add_argument("--artifact-kind", default=MODEL_KIND, help="kind the artifact was written as")
    binding_arguments(parser, version=True)  # --model-version is also reported in metadata and responses
    parser.add_argument("--data-key-file", type=Path, required=True, help="data key file of the mounted Secret")
    parser.add_argument("--tls-dir", type=Path, required=True, help="mounted Secret with tls.crt, tls.key and ca.crt")
    parser.add_argument("--model-name", required=True, help="model name in /v2/models/<name>")
    parser.add_argument("--port", type=int, default=8443, help="OIP v2 over mutual TLS")
    parser.add_argument("--metrics-port", type=int, default=9090, help="plain HTTP: /metrics and /v2/health/*")
    parser.add_argument(
        "--allow-list",
        type=Path,
        help="allow-list file (JSON) in a mounted ConfigMap or Secret, not a subPath mount: only the client "
        "certificates on it are answered, within their rate limits; without it, every certificate of the CA",
    )
    parser.add_argument(
        "--reload-interval",
        "--tls-reload-interval",
        dest="reload_interval",
        type=float,
        default=2.0,
        help="seconds between checks of --tls-dir and --allow-list for changes",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=DRAIN_SECONDS,
        help="after SIGTERM, seconds to answer while not ready, before stopping",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=TERMINATION_LOG,
        help="file a refusal to start is written to, if it exists",
    )


def load_predictor_from_artifact(args: argparse.Namespace, loader: Loader) -> Predictor:
    """Check the artifact's digest, authenticate it as the compressed model ``args`` name, then build the model.

    Decryption is in memory; raises ``ArtifactError`` (``ArtifactRejectedError`` for a file that
    is not the one expected), ``OSError`` or, from ``loader``, ``ValueError``.
    """
    binding = model_binding(args.model_uid, args.training_version, "compressed", args.model_version)
    key = read_data_key(args.data_key_file)
    payload = read_artifact(args.artifact, key, kind=args.artifact_kind, binding=binding, digest=args.artifact_digest)
    return loader(payload, args.model_name)


async def serve_until_terminated(server: ServingServer, drain_seconds: float) -> None:
    """Run ``server`` until SIGTERM or SIGINT, drain, then finish the requests in flight and stop.

    Draining: for ``drain_seconds`` the server reports not ready and still answers, while the
    Service's endpoints and every node's proxy stop sending it new connections (a rolling
    update or a scale-down then refuses no client).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
        server.drain()
        await asyncio.sleep(drain_seconds)


def run_serve(args: argparse.Namespace) -> None:
    """The ``serve`` subcommand, with the worker image's model loader."""
    from securemodel.models import load_predictor  # imported here: it brings torch

    serve_artifact(args, load_predictor)


def serve_artifact(args: argparse.Namespace, loader: Loader) -> None:
    """Load the model of ``args.artifact`` with ``loader``, then serve it until terminated."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.allow_list is None:
        logging.getLogger(__name__).warning(
            "no --allow-list: every client certificate of the model's CA is answered until it expires, unlimited"
        )
    try:
        predictor = load_predictor_from_artifact(args, loader)
    except (ArtifactError, OSError, ValueError) as err:
        _refuse("ArtifactRejected", err, args.termination_log)
    try:
        server = ServingServer(
            predictor,
            args.tls_dir,
            port=args.port,
            metrics_port=args.metrics_port,
            reload_interval=args.reload_interval,
            version=args.model_version,
            allow_list=args.allow_list,
            audit=sys.stdout,
        )
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        _refuse("ServeFailed", err, args.termination_log)
    asyncio.run(serve_until_terminated(server, args.drain_seconds))


def _refuse(reason: str, err: Exception, termination_log: Path) -> NoReturn:
    """Write the termination message, then exit with status 1 and the reason on stderr."""
    write_refusal(reason, str(err), termination_log)
    raise SystemExit(f"securemodel-worker serve: {err}") from None
