"""Privacy-budget claims under contention, against the real API server: ``python -m bench.claims``.

N claimants of ε=1 each arrive at once on one ``fcfs`` PrivacyBudget of ε=N/2, so half are
granted and half wait. Two ways in:

``ledger``
    N threads each run one ledger transaction (:func:`securemodel.operator.budget.ledger.transact`)
    at the same moment, with no coordination but the API server's optimistic concurrency:
    every lost race is a 409 Conflict and a retry from a fresh read.
``operator``
    N SecureModels are created at once (N threads) in a namespace the operator serves; the
    operator sizes, calibrates (one calibration: the models are identical) and claims for
    each, batching the claims that queue up on the budget into one write.

Measured from the moment the claimants are released: the time until every claim is in
the ledger and decided (Reserved or Waiting; for ``operator`` also until every model's
status shows it), grants per second (N/2 grants over the time of the last grant), the
writes of the budget, and (``ledger``) the conflicts. The median of ``--repeat`` runs is
written to the ``## Privacy budget claims`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from securemodel.api import GROUP, VERSION
from securemodel.operator.budget.ledger import BudgetRef, Transaction, submitting, transact
from securemodel.privacy import Consumer

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Privacy budget claims"
HEADER = """# Benchmarks

Each section below is produced by a script in `bench/` (named in the section), which replaces
its own section when it runs (`make bench`). Each says when it was run and on what machine.
"""


@dataclass(frozen=True)
class Run:
    """One burst of N claimants, timed from their release."""

    decided: float  # seconds until every claim is in the ledger, Reserved or Waiting
    last_grant: float  # seconds until the last grant
    shown: float | None  # seconds until every model's status shows its claim (operator only)
    writes: int  # versions of the budget written during the burst
    conflicts: int | None  # 409s met by the transactions (ledger only)


class BudgetClock:
    """Watches one budget, notes when each claim first appears in each state, and checks every version.

    :meth:`stop` raises if any version held more ε (Reserved + Committed claims, summed exactly)
    than the budget's ε, or two claims of one uid.
    """

    def __init__(self, custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str, since: str) -> None:
        self.first: dict[tuple[str, str], float] = {}
        self.writes = 0
        self.violations: list[str] = []
        self._custom, self._namespace, self._name, self._version = custom, namespace, name, since
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for event in kubernetes.watch.Watch().stream(
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self._namespace,
                "privacybudgets",
                field_selector=f"metadata.name={self._name}",
                resource_version=self._version,
                timeout_seconds=1,
            ):
                now = time.monotonic()
                budget = event["object"]
                self._version = budget["metadata"]["resourceVersion"]
                self.writes += 1
                claims = (budget.get("status") or {}).get("claims", ())
                for claim in claims:
                    self.first.setdefault((claim["consumer"]["uid"], claim["state"]), now)
                self._check(self._version, budget["spec"]["epsilon"], claims)

    def _check(self, version: str, epsilon: float, claims: list[dict[str, Any]]) -> None:
        held = sum(
            (Fraction(repr(c["epsilon"])) for c in claims if c["state"] in ("Reserved", "Committed")), Fraction(0)
        )
        if held > Fraction(repr(epsilon)):
            self.violations.append(f"version {version} holds ε {float(held)} of {epsilon}")
        if len({c["consumer"]["uid"] for c in claims}) != len(claims):
            self.violations.append(f"version {version} has two claims of one uid")

    def until(self, count: int, states: tuple[str, ...], timeout: float) -> float:
        """The monotonic time by which ``count`` claims had reached one of ``states``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reached = {uid: t for (uid, state), t in self.first.items() if state in states}
            if len(reached) >= count:
                return max(reached.values())
            time.sleep(0.02)
        raise TimeoutError(f"{count} claims did not reach {states} within {timeout} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.violations:
            raise RuntimeError("the ledger over-committed: " + "; ".join(self.violations))


def create_budget(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str, epsilon: float) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PrivacyBudget",
        "metadata": {"name": name},
        "spec": {"epsilon": epsilon, "delta": 1e-5, "policy": "fcfs", "data": {"sources": [f"pvc://{name}/"]}},
    }
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "privacybudgets", body)
    return created["metadata"]["resourceVersion"]


def ledger_run(client: kubernetes.client.ApiClient, namespace: str, n: int, number: int) -> Run:
    """N threads, one transaction each, released together."""
    custom = kubernetes.client.CustomObjectsApi(client)
    ref = BudgetRef(namespace, f"ledger-{n}-{number}")
    clock = BudgetClock(custom, namespace, ref.name, create_budget(custom, namespace, ref.name, n / 2))
    barrier = threading.Barrier(n + 1)

    def claimant(index: int) -> Transaction:
        change = submitting(Consumer("SecureModel", namespace, f"c{index}", f"{ref.name}-{index}"), 1.0, 1e-5)
        barrier.wait()
        return transact(custom, ref, [change])

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(claimant, index) for index in range(n)]
        barrier.wait()
        start = time.monotonic()
        transactions = [future.result() for future in futures]
    try:
        decided = clock.until(n, ("Reserved", "Waiting"), timeout=120)
        last_grant = clock.until(n // 2, ("Reserved",), timeout=120)
    finally:
        clock.stop()
    return Run(decided - start, last_grant - start, None, clock.writes, sum(t.attempts - 1 for t in transactions))


def model(budget: str, index: int) -> dict[str, Any]:
    """A SecureModel of the burst on ``budget``; all are identical but for the name."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecureModel",
        "metadata": {"name": f"{budget}-{index}", "labels": {"bench": budget}},
        "spec": {
            "model": {"architecture": "mlp"},
            # builtin://wine's size on the budget's own volume: one ledger per datum, so each budget of the
            # namespace protects its own data (the file is never read: the bench measures claims only).
            "data": {"source": f"pvc://{budget}/wine.npz", "samples": 178, "schema": {"label": {"classes": ["a", "b", "c"]}}},
            "privacy": {"budgetRef": budget, "epsilon": 1.0, "accountant": "rdp"},
            "training": {"epochs": 1},
        },
    }


def warm_up(client: kubernetes.client.ApiClient, namespace: str) -> float:
    """Seconds until the operator's first claim is decided, calibration included (later bursts reuse it)."""
    custom = kubernetes.client.CustomObjectsApi(client)
    clock = BudgetClock(custom, namespace, "warm-up", create_budget(custom, namespace, "warm-up", 1.0))
    start = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "securemodels", model("warm-up", 0))
    try:
        return clock.until(1, ("Reserved",), timeout=120) - start
    finally:
        clock.stop()


def operator_run(client: kubernetes.client.ApiClient, namespace: str, n: int, number: int) -> Run:
    """N SecureModels created together; the operator claims for them."""
    custom = kubernetes.client.CustomObjectsApi(client)
    budget = f"operator-{n}-{number}"
    clock = BudgetClock(custom, namespace, budget, create_budget(custom, namespace, budget, n / 2))
    shown: dict[str, float] = {}
    models = ModelClock(custom, namespace, budget, shown)
    barrier = threading.Barrier(n + 1)

    def create(index: int) -> None:
        body = model(budget, index)
        barrier.wait()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "securemodels", body)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(create, index) for index in range(n)]
        barrier.wait()
        start = time.monotonic()
        for future in futures:
            future.result()
    try:
        decided = clock.until(n, ("Reserved", "Waiting"), timeout=600)
        last_grant = clock.until(n // 2, ("Reserved",), timeout=600)
        everywhere = models.until(n, timeout=600)
    finally:
        clock.stop()
        models.stop()
    return Run(decided - start, last_grant - start, everywhere - start, clock.writes, None)


class ModelClock:
    """Watches the models of one burst and notes when each first shows its claim decided."""

    def __init__(
        self, custom: kubernetes.client.CustomObjectsApi, namespace: str, label: str, shown: dict[str, float]
    ) -> None:
        self.shown = shown
        self._custom, self._namespace, self._label = custom, namespace, label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            for event in kubernetes.watch.Watch().stream(
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self._namespace,
                "securemodels",
                label_selector=f"bench={self._label}",
                resource_version=version,
                timeout_seconds=1,
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                for condition in (obj.get("status") or {}).get("conditions", ()):
                    if condition["type"] == "BudgetReserved" and condition["reason"] in ("Reserved", "Waiting"):
                        self.shown.setdefault(obj["metadata"]["name"], time.monotonic())

    def until(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.shown) >= count:
                return max(self.shown.values())
            time.sleep(0.02)
        raise TimeoutError(f"{count} models did not show their claim within {timeout} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def add_ledger_writer(kubeconfig: Path) -> str:
    """Let the identity of ``kubeconfig`` write PrivacyBudget ledgers, as the chart's ``admissionPolicies.ledgerWriters``
    would: the benchmarks write ledgers directly and run the operator with the admin's kubeconfig, and the ledger's
    admission policy (deploy/30-admission.yaml, applied here with the identity added) admits only the operator's
    ServiceAccount otherwise. Returns the identity. For the local cluster only: ``make demo`` and the e2e tests
    apply deploy/ again, which drops it."""
    kubectl = REPO / ".cluster" / "bin" / "kubectl"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    user = subprocess.run([str(kubectl), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
                          capture_output=True, text=True, check=True, env=env).stdout  # fmt: skip
    policies = list(yaml.safe_load_all((REPO / "deploy" / "30-admission.yaml").read_text(encoding="utf-8")))
    for policy in policies:
        for variable in policy.get("spec", {}).get("variables") or ():
            if policy["metadata"]["name"].startswith("privacybudget-ledger.") and variable["name"] == "writers":
                variable["expression"] = variable["expression"].rstrip().removesuffix("]") + f", '{user}']"
    subprocess.run([str(kubectl), "apply", "-f", "-"], input=yaml.safe_dump_all(policies), text=True, check=True,
                   env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    return str(user)


@contextlib.contextmanager
def operator(kubeconfig: Path, namespace: str) -> Iterator[subprocess.Popen[bytes]]:
    """The operator serving ``namespace``, as a process, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    health = f"http://127.0.0.1:{port}/healthz"
    binary = Path(sys.executable).parent / "securemodel-operator"
    process = subprocess.Popen(
        [str(binary), "--namespace", namespace, "--health", health],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(health, timeout=1):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the operator did not become healthy")
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def scratch_namespace(client: kubernetes.client.ApiClient) -> Iterator[str]:
    """A namespace for the benchmark, emptied of finalizers and deleted afterwards."""
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    name = core.create_namespace({"metadata": {"generateName": "bench-claims-"}}).metadata.name
    try:
        yield name
    finally:
        for plural in ("securemodels", "privacybudgets"):
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, name, plural)["items"]:
                with contextlib.suppress(kubernetes.client.ApiException):
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, name, plural, item["metadata"]["name"], {"metadata": {"finalizers": None}}
                    )
        core.delete_namespace(name)


def median_run(runs: list[Run]) -> Run:
    """The run with the median time until all were decided."""
    return sorted(runs, key=lambda run: run.decided)[len(runs) // 2]


def table(results: dict[tuple[str, int], list[Run]]) -> str:
    lines = [
        "| claimants | N | all decided in ledger (s) | all models show it (s) | grants/s | budget writes "
        "| 409 conflicts |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (mode, n), runs in results.items():
        run = median_run(runs)
        shown = f"{run.shown:.2f}" if run.shown is not None else "–"
        conflicts = str(run.conflicts) if run.conflicts is not None else "–"
        rate = (n // 2) / run.last_grant
        lines.append(
            f"| {mode} | {n} | {run.decided:.2f} | {shown} | {rate:.0f} | {run.writes} | {conflicts} |"
        )
    return "\n".join(lines)


def section(results: dict[tuple[str, int], list[Run]], repeat: int, server: str, first_claim: float) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    machine = f"{os.cpu_count()} cores ({platform.machine()}, {python})"
    return f"""{SECTION}

Produced by `bench/claims.py` on {when}.
Machine: {machine}, shared with other work; the local single-node cluster's kube-apiserver {server}
runs on it too. N claimants of ε=1 arrive at once on one `fcfs` budget of ε=N/2: half are
granted, half wait. Median of {repeat} runs.

- **ledger**: N threads each run one ledger transaction at the same moment
  (`securemodel.operator.budget.ledger.transact`), coordinated by nothing but the API server's optimistic
  concurrency: each lost race is a 409 Conflict and a retry from a fresh read.
- **operator**: N SecureModels (builtin://wine, RDP) are created by N threads at once; the running
  operator sizes, calibrates and claims for each, batching the claims that queue up on a budget
  into one write (group commit), and publishes each model's claim state. The models are identical,
  and the operator calibrates a plan once: before the bursts, one warm-up model's claim took
  {first_claim:.2f} s from creation to grant, calibration included; the bursts measure claiming.

Times are from the release of the claimants: until every claim is in the ledger, Reserved or
Waiting, and (operator) until every model's status shows it; grants/s is the N/2 grants over the
time of the last one. Budget writes are the versions of the budget written during the burst.

{table(results)}

{reading(results)}
"""


def reading(results: dict[tuple[str, int], list[Run]]) -> str:
    """One sentence comparing the two ways in at the largest N."""
    n = max(size for _, size in results)
    alone, batched = median_run(results[("ledger", n)]), median_run(results[("operator", n)])
    return (
        f"At N={n}, uncoordinated claimants met {alone.conflicts} conflicts and took {alone.decided:.1f} s to be "
        f"decided, against {batched.writes} budget writes and {batched.decided:.1f} s through the operator "
        f"({alone.decided / batched.decided:.0f}× faster): without batching every claimant races every other, so "
        "conflicts grow quadratically with N. Either way, no version of the budget the benchmark watched "
        "held more ε than the budget has, or two claims of one consumer."
    )


def write(document: Path, text: str) -> None:
    """Replace this benchmark's section of ``document`` (create the file with its header if missing)."""
    current = document.read_text(encoding="utf-8") if document.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current)
    else:
        updated = f"{current.rstrip()}\n\n{text}"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(updated.rstrip() + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="numbers of claimants (even)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and mode; the median is reported")
    parser.add_argument("--kubeconfig", type=Path, default=REPO / ".cluster" / "kubeconfig")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(args.kubeconfig), client_configuration=config)
    config.connection_pool_maxsize = max(args.sizes) + 4  # one connection per concurrent claimant
    client = kubernetes.client.ApiClient(config)
    server = kubernetes.client.VersionApi(client).get_code().git_version
    add_ledger_writer(args.kubeconfig)
    results: dict[tuple[str, int], list[Run]] = {}

    def measure(mode: str, run: Callable[[kubernetes.client.ApiClient, str, int, int], Run], namespace: str) -> None:
        for n in args.sizes:
            for number in range(args.repeat):
                result = run(client, namespace, n, number)
                results.setdefault((mode, n), []).append(result)
                print(f"{mode} N={n} #{number}: {result}", flush=True)

    with scratch_namespace(client) as namespace:
        measure("ledger", ledger_run, namespace)  # no operator: nothing else writes the budgets
        with operator(args.kubeconfig, namespace):
            first_claim = warm_up(client, namespace)
            print(f"operator: first claim decided in {first_claim:.2f} s, calibration included", flush=True)
            measure("operator", operator_run, namespace)
    text = section(results, args.repeat, server, first_claim)
    write(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
