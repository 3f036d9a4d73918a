"""What the handlers share: the API client, the budget directory, the ledger writer, wake-ups and the calibrator."""

import asyncio
import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf
import kubernetes

from securemodel import __version__
from securemodel.operator import kube
from securemodel.operator.secure_model.calibration import Calibrator
from securemodel.operator.settings import API_THREADS, CALIBRATION_THREADS
from securemodel.operator.conditions import Event
from securemodel.operator.wakeups import Wakeups
from securemodel.operator.budget.directory import BudgetDirectory
from securemodel.operator.budget.writer import LedgerWriter


@dataclass(frozen=True)
class Runtime:
    """One per operator process, created at startup and kept in kopf's memo."""

    client: kubernetes.client.ApiClient
    budgets: BudgetDirectory
    writer: LedgerWriter
    wakeups: Wakeups
    calibrator: Calibrator
    executor: concurrent.futures.ThreadPoolExecutor

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)


def connect(connections: int | None = None) -> kubernetes.client.ApiClient:
    """An API client with the in-cluster ServiceAccount, else ``$KUBECONFIG`` (or ~/.kube/config), keeping up to
    ``connections`` connections open (the client's default where None).

    Its requests name the operator in their User-Agent (``securemodel-operator/<version>``): the API server's audit
    log shows who made them, and a write that names no field manager is recorded under the operator's (the API
    server takes the User-Agent's first word; the client's own, ``OpenAPI-Generator``, said nothing about who wrote).
    """
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)
    if connections is not None:
        config.connection_pool_maxsize = connections
    client = kubernetes.client.ApiClient(config)
    client.user_agent = f"{kube.FIELD_MANAGER}/{__version__}"
    return client


def post_with_kopf(body: Mapping[str, Any], events: tuple[Event, ...]) -> None:
    """Queue ``events`` about ``body`` on kopf's Event poster (non-blocking)."""
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: object) -> None:
    """Create the runtime before any object is handled, and the threads its blocking API calls run on."""
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(API_THREADS, thread_name_prefix="api")
    )
    client = connect(API_THREADS)
    executor = concurrent.futures.ThreadPoolExecutor(CALIBRATION_THREADS, thread_name_prefix="calibration")
    budgets = BudgetDirectory()
    memo.runtime = Runtime(
        client=client,
        budgets=budgets,
        writer=LedgerWriter(kubernetes.client.CustomObjectsApi(client), post_with_kopf, budgets),
        wakeups=Wakeups(),
        calibrator=Calibrator(executor),
        executor=executor,
    )


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: object) -> None:
    """Stop calibrating and close the API client's connections."""
    current = runtime(memo)
    current.executor.shutdown(wait=False, cancel_futures=True)
    current.client.close()


def runtime(memo: kopf.Memo) -> Runtime:
    """The runtime :func:`start` created."""
    return cast(Runtime, memo["runtime"])
