"""``securemodel-operator``: run the kopf operator against the current kubeconfig or in-cluster config."""

import argparse
import logging

import kopf

# Importing the handler modules registers their handlers with kopf.
from securemodel.operator import federated_round, pipeline, privacy_budget, runtime, secure_model, settings  # noqa: F401


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="securemodel-operator",
        description="Reconcile PrivacyBudget, SecureModel and FederatedRound objects. Connects with "
        "$KUBECONFIG (or ~/.kube/config), or the in-cluster ServiceAccount inside a pod.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--health",
        default=settings.DEFAULT_HEALTH_ENDPOINT,
        help=f"URL of the liveness/readiness endpoint (default: {settings.DEFAULT_HEALTH_ENDPOINT})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run until SIGINT/SIGTERM.

    Standalone (no kopf peering): the Deployment runs one replica with the Recreate strategy,
    so two operators never serve the same objects; see deploy/20-operator.yaml.
    """
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)
    if not args.verbose:
        # One line per probe request every few seconds drowns the reconciliation logs.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # dp-accounting's RDP accountant warns once per Rényi order it cannot evaluate and leaves
    # out (the bound stays valid, only looser): hundreds of lines per calibration at large q.
    logging.getLogger("absl").setLevel(logging.ERROR)
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.health,
    )
