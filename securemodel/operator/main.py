"""``securemodel-operator``: run the kopf operator against the current kubeconfig or in-cluster config."""

import argparse
import logging
import os
import socket

import kopf

# Importing the handler modules registers their handlers with kopf.
from securemodel.operator import connections, runtime, settings  # noqa: F401
from securemodel.operator.budget import handlers as budget_handlers  # noqa: F401
from securemodel.operator.federated import handlers as federated_handlers  # noqa: F401
from securemodel.operator.leader import LeaseElector, StandbyHealth, exit_now, leave_on_sigterm
from securemodel.operator.secure_model import handlers as model_handlers  # noqa: F401
from securemodel.operator.secure_model import client_role  # noqa: F401


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
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE, else the first --namespace, "
        "else securemodel-system)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run until SIGINT/SIGTERM, once this process leads (:mod:`securemodel.operator.leader`).

    Any number of replicas may run: one holds the Lease and reconciles, the others wait, answering
    their health endpoint, and one takes over within the lease duration of the leader's death. A
    waiting replica leaves at once on SIGTERM; the leader stops as kopf does, then gives the Lease up.
    """
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)
    namespace = args.lease_namespace or (args.namespace[0] if args.namespace else "securemodel-system")
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaseElector(runtime.connect(), namespace, settings.LEASE_NAME, identity,
                           settings.LEASE_SECONDS, settings.LEASE_RENEW_SECONDS)  # fmt: skip
    leave_on_sigterm()
    with StandbyHealth(args.health):
        elector.acquire()
    elector.keep(lost=exit_now)
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
        memo=connections.served(args.namespace),
    )
    elector.release()
