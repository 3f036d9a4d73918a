"""The control plane at scale, against the real API server: ``python -m bench.control_plane``.

For each N (10, 100, 1000 by default) a fresh namespace, one ``fcfs`` PrivacyBudget large enough
for every claim, and a fresh operator process serving that namespace (started as
:func:`bench.claims.operator` starts it, with this checkout's code and the given kubeconfig).
One warm-up model first: its claim granted and its train Job created show the operator leads and
has calibrated the plan (the models are identical, so the burst measures claiming and children,
not calibration). Then N SecureModels are created at once (``--threads`` clients); each asks
for a GPU the node does not have, so its train Job exists but its pod stays Pending and no
worker runs. Measured from the first create:

* seconds until every model's status shows its claim granted (condition ``BudgetReserved``
  True) and until every model's train Job exists;
* the operator's resident memory after start-up (idle) and its peak (``VmHWM`` of
  ``/proc/<pid>/status``) when every Job exists, its CPU seconds over the burst (``utime`` +
  ``stime`` of ``/proc/<pid>/stat``), and its peak again after every model was deleted;
* where the machine's CPU went over the burst: its busy seconds (``/proc/stat``) against the
  seconds its cores had, and the share of the operator, of each process of the local cluster
  (found by name) and of this benchmark;
* API requests per model, from the API server's ``apiserver_request_total``: the writes and
  reads (no LIST or WATCH) on the kinds the operator owns, less the N creates of this
  benchmark, and every request the API server served over the burst (the job controller's,
  the scheduler's and the volume binder's included);
* seconds until every model is gone once they are all deleted together, each by its own DELETE
  from the benchmark's clients (the operator settles each claim: Released, as no pod ran).

Afterwards the namespace is emptied of finalizers and deleted. It refuses to run while the
chart's operator runs in the cluster (two operators would both reconcile the namespace). Like
``bench.claims``, it runs the operator as the kubeconfig's user, whom the ledger's admission policy
must admit as a ledger writer (the integration tests' fixture adds the admin user).
Writes the ``## Control plane at scale`` section of docs/benchmarks.md.

    KUBECONFIG=.cluster/kubeconfig python -m bench.control_plane [--sizes 10 100 1000] [--threads 32]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import kubernetes
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from bench.claims import HEADER, add_ledger_writer, create_budget, model, operator
from securemodel.api import GROUP, VERSION
from securemodel.api.privacy_budget import ALLOW_DELETE_WITH_SPEND
from securemodel.operator.secure_model.children import COMPONENT_LABEL, MODEL_LABEL

REPO = Path(__file__).resolve().parents[1]
SECTION: Final = "## Control plane at scale"
MIB: Final = 1024 * 1024
# The kinds the operator reads and writes for a model (its own, the budget, the children, Events).
OPERATOR_KINDS: Final = frozenset(
    {
        (GROUP, "securemodels"),
        (GROUP, "privacybudgets"),
        ("", "secrets"),
        ("", "configmaps"),
        ("", "persistentvolumeclaims"),
        ("", "services"),
        ("", "events"),
        ("batch", "jobs"),
        ("apps", "deployments"),
        ("networking.k8s.io", "networkpolicies"),
    }
)
# Status subresources that controllers of the cluster write (the operator writes only its own kinds' status).
CLUSTER_WRITTEN: Final = frozenset({("", "persistentvolumeclaims", "status"), ("batch", "jobs", "status")})
STREAMING_VERBS: Final = frozenset({"LIST", "WATCH", "WATCHLIST", "CONNECT"})
# The local cluster's processes, by the name the kernel keeps (its first 15 characters).
CLUSTER_PROCESSES: Final = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kubelet", "kube-router",
                            "containerd", "source-controll", "kustomize-contr")  # fmt: skip
# The operator Deployment's MALLOC_MMAP_THRESHOLD_ (charts/securemodel-operator/templates/deployment.yaml).
CHART_MMAP_THRESHOLD: Final = "131072"


@dataclass(frozen=True)
class Burst:
    """One burst of N models, timed from the first create."""

    n: int
    created: float  # seconds until the benchmark had created every model
    decided: float  # seconds until every model showed BudgetReserved True
    jobs: float  # seconds until every model's train Job existed
    idle_mib: float  # operator's resident memory after start-up and the warm-up model
    peak_mib: float  # operator's peak resident memory when every Job existed
    cpu_seconds: float  # operator's CPU time from the first create until every claim was granted and every Job existed
    machine_busy: float  # the machine's busy CPU seconds (all cores) until every claim was granted and every Job existed
    cpu_by_process: dict[str, float]  # CPU seconds of the cluster's processes and this benchmark, same window
    operator_requests: Counter[tuple[str, str]]  # (resource, verb) on the operator's kinds, less the creates
    all_requests: int  # every request the API server served over the burst
    deleted: float  # seconds from deleting every model until all were gone
    peak_after_mib: float  # operator's peak resident memory by the end of the deletion


class FirstSeen:
    """Watches the objects of a list call and notes when each key first satisfies a predicate.

    ``seen(obj)`` returns the key an object counts for, or None while it does not count yet.
    """

    def __init__(self, client: kubernetes.client.ApiClient, list_call: Callable[..., Any], *args: str,
                 label_selector: str, seen: Callable[[Mapping[str, Any]], str | None]) -> None:  # fmt: skip
        self.first: dict[str, float] = {}
        self._client, self._list, self._args, self._selector, self._seen = client, list_call, args, label_selector, seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                for event in kubernetes.watch.Watch().stream(
                    self._list, *self._args, label_selector=self._selector, resource_version=version,
                    timeout_seconds=5,
                ):  # fmt: skip
                    obj = self._client.sanitize_for_serialization(event["object"])  # a typed object to a dict
                    version = obj["metadata"]["resourceVersion"]
                    key = self._seen(obj)
                    if key is not None:
                        self.first.setdefault(key, time.monotonic())
            except kubernetes.client.ApiException as error:
                if error.status != 410:
                    raise
                version = None  # expired: start again from the current state (ADDED for every object)

    def until(self, count: int, timeout: float) -> float:
        """The monotonic time by which ``count`` keys had been seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.first) >= count:
                return max(self.first.values())
            time.sleep(0.05)
        raise TimeoutError(f"only {len(self.first)} of {count} seen within {timeout} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def granted(obj: Mapping[str, Any]) -> str | None:
    """The model's name once its status shows its claim granted."""
    for condition in (obj.get("status") or {}).get("conditions", ()):
        if condition.get("type") == "BudgetReserved" and condition.get("status") == "True":
            return str(obj["metadata"]["name"])
    return None


def owner_of(job: Mapping[str, Any]) -> str | None:
    """The name of the model a train Job belongs to."""
    return (job["metadata"].get("labels") or {}).get(MODEL_LABEL)


def burst_model(budget: str, index: int) -> dict[str, Any]:
    """A model of the burst: :func:`bench.claims.model` asking for a GPU, so its train pod stays Pending."""
    body = model(budget, index)
    body["spec"]["resources"] = {"gpus": 1}
    return body


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of process ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy (``/proc/stat``: every state but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cluster_cpu_seconds() -> Counter[str]:
    """CPU seconds used so far by the local cluster's processes (:data:`CLUSTER_PROCESSES`), by name."""
    used: Counter[str] = Counter()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            name = (proc / "comm").read_text().strip()
            if name in CLUSTER_PROCESSES:
                used[name] += cpu_seconds(int(proc.name))
    return used


def request_counts(client: kubernetes.client.ApiClient) -> Counter[tuple[str, str, str, str]]:
    """``apiserver_request_total`` by (group, resource, subresource, verb), summed over codes and scopes."""
    request = client.param_serialize("GET", "/metrics", header_params={"Accept": "text/plain"},
                                     auth_settings=["BearerToken"])  # fmt: skip
    response = client.call_api(*request)
    if response.status != 200:
        raise RuntimeError(f"GET /metrics answered {response.status}")
    return parse_requests(response.read().decode())


def parse_requests(metrics: str) -> Counter[tuple[str, str, str, str]]:
    """``apiserver_request_total`` of a Prometheus text exposition, keyed as :func:`request_counts` keys it."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                key = (labels.get("group", ""), labels.get("resource", ""), labels.get("subresource", ""),
                       labels.get("verb", ""))  # fmt: skip
                counts[key] += int(sample.value)
    return counts


def operator_share(before: Counter[tuple[str, str, str, str]], after: Counter[tuple[str, str, str, str]],
                   creates: int) -> Counter[tuple[str, str]]:  # fmt: skip
    """The requests between ``before`` and ``after`` on the operator's kinds, by (resource, verb), less ``creates``."""
    share: Counter[tuple[str, str]] = Counter()
    for (group, resource, subresource, verb), count in (after - before).items():
        if (group, resource) not in OPERATOR_KINDS or verb in STREAMING_VERBS:
            continue
        if (group, resource, subresource) in CLUSTER_WRITTEN:
            continue
        share[(f"{resource}/{subresource}" if subresource else resource, verb)] += count
    share[("securemodels", "POST")] -= creates
    return +share


def chart_operator_running(client: kubernetes.client.ApiClient) -> bool:
    """Whether the chart's operator has a pod in the cluster."""
    pods = kubernetes.client.CoreV1Api(client).list_pod_for_all_namespaces(
        label_selector="app.kubernetes.io/name=securemodel-operator")
    return bool(pods.items)


@contextlib.contextmanager
def scratch_namespace(client: kubernetes.client.ApiClient, n: int) -> Iterator[str]:
    """A namespace for one burst; afterwards emptied of finalizers (models, budgets, pods) and deleted."""
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    name = core.create_namespace({"metadata": {"generateName": f"bench-control-plane-{n}-"}}).metadata.name
    try:
        yield name
    finally:
        unfinalized = {"metadata": {"finalizers": None}}
        # A burst cut short leaves claims Reserved, and the API server refuses to delete a budget holding spend.
        releasable = {"metadata": {"finalizers": None, "annotations": {ALLOW_DELETE_WITH_SPEND: "true"}}}
        for plural, patch in (("securemodels", unfinalized), ("privacybudgets", releasable)):
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, name, plural)["items"]:
                with contextlib.suppress(kubernetes.client.ApiException):
                    custom.patch_namespaced_custom_object(GROUP, VERSION, name, plural, item["metadata"]["name"],
                                                          patch)  # fmt: skip
        for pod in core.list_namespaced_pod(name).items:
            if pod.metadata.finalizers:
                with contextlib.suppress(kubernetes.client.ApiException):
                    core.patch_namespaced_pod(pod.metadata.name, name, unfinalized)
        core.delete_namespace(name)


def delete_all(custom: kubernetes.client.CustomObjectsApi, namespace: str, selector: str, threads: int,
               deadline: float) -> None:
    """Mark every selected model deleted, each by its own request from ``threads`` clients at once: the API server
    cuts a delete-collection of a thousand objects off at its request timeout (a 504, or the connection closed
    without a response) and left hundreds unmarked. A request that fails so is repeated, backing off, until ``deadline``
    (``time.monotonic()``) has passed."""
    names = [item["metadata"]["name"]
             for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "securemodels",
                                                              label_selector=selector)["items"]]  # fmt: skip

    def delete(name: str) -> None:
        pause = 0.5
        while True:
            try:
                custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "securemodels", name)
                return
            except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as error:
                if isinstance(error, kubernetes.client.ApiException) and error.status == 404:
                    return
                if isinstance(error, kubernetes.client.ApiException) and (error.status or 0) < 500:
                    raise  # refused, not overloaded: repeating it changes nothing
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the API server never marked {name} deleted") from error
            time.sleep(pause)  # back off from an overloaded API server instead of adding to its load
            pause = min(2 * pause, 8.0)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(delete, names))


def burst(client: kubernetes.client.ApiClient, kubeconfig: Path, n: int, threads: int, timeout: float) -> Burst:
    """N models at once on one budget in a fresh namespace, with a fresh operator."""
    custom = kubernetes.client.CustomObjectsApi(client)
    batch = kubernetes.client.BatchV1Api(client)
    with scratch_namespace(client, n) as namespace, operator(kubeconfig, namespace) as process:
        budget = "budget"
        # ε=1 per claim composes to far less than N; an ε of 2N grants every claim whatever the accountant.
        create_budget(custom, namespace, budget, 2.0 * (n + 1))
        decided = FirstSeen(client, custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "securemodels",
                            label_selector=f"bench={budget}", seen=granted)  # fmt: skip
        jobs = FirstSeen(client, batch.list_namespaced_job, namespace, label_selector=f"{COMPONENT_LABEL}=train",
                         seen=owner_of)  # fmt: skip
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "securemodels", burst_model(budget, 0))
            decided.until(1, timeout)
            jobs.until(1, timeout)
            idle, _ = memory_mib(process.pid)
            before, cpu_before = request_counts(client), cpu_seconds(process.pid)
            busy_before, cluster_before = machine_busy_seconds(), cluster_cpu_seconds()
            own_before = time.process_time()
            bodies = [burst_model(budget, index) for index in range(1, n + 1)]
            start = time.monotonic()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda body: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "securemodels", body), bodies))  # fmt: skip
            created = time.monotonic() - start
            all_decided = decided.until(n + 1, timeout) - start
            all_jobs = jobs.until(n + 1, timeout) - start
            _, peak = memory_mib(process.pid)
            cpu = cpu_seconds(process.pid) - cpu_before
            busy = machine_busy_seconds() - busy_before
            by_process = dict(cluster_cpu_seconds() - cluster_before)
            by_process["this benchmark"] = time.process_time() - own_before
            after = request_counts(client)
        finally:
            decided.stop()
            jobs.stop()
        deleting = time.monotonic()
        deadline = deleting + timeout
        print(f"N={n}: created {created:.1f} s, decided {all_decided:.1f} s, Jobs {all_jobs:.1f} s, RSS idle/peak "
              f"{idle:.0f}/{peak:.0f} MiB, CPU {cpu:.1f} s", file=sys.stderr, flush=True)  # kept if the deletion fails
        delete_all(custom, namespace, f"bench={budget}", threads, deadline)
        while custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "securemodels", limit=1)["items"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the models were not all gone {timeout} s after their deletion")
            time.sleep(0.5)
        deleted = time.monotonic() - deleting
        _, peak_after = memory_mib(process.pid)
    return Burst(
        n=n,
        created=created,
        decided=all_decided,
        jobs=all_jobs,
        idle_mib=idle,
        peak_mib=peak,
        cpu_seconds=cpu,
        machine_busy=busy,
        cpu_by_process=by_process,
        operator_requests=operator_share(before, after, n),
        all_requests=sum((after - before).values()),
        deleted=deleted,
        peak_after_mib=peak_after,
    )


def table(bursts: list[Burst]) -> str:
    lines = [
        "| N | created (s) | all claims granted (s) | all train Jobs (s) | operator RSS idle / peak (MiB) "
        "| peak after deletion (MiB) | operator CPU (s) | API requests per model: operator's / all | deletion (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in bursts:
        ours = sum(b.operator_requests.values()) / b.n
        lines.append(
            f"| {b.n} | {b.created:.1f} | {b.decided:.1f} | {b.jobs:.1f} | {b.idle_mib:.0f} / {b.peak_mib:.0f} "
            f"| {b.peak_after_mib:.0f} | {b.cpu_seconds:.1f} | {ours:.1f} / {b.all_requests / b.n:.1f} "
            f"| {b.deleted:.1f} |"
        )
    return "\n".join(lines)


def breakdown(b: Burst) -> str:
    """The operator's requests per model at one N, by resource and verb, most first."""
    parts = [f"{resource} {verb} {count / b.n:.2f}" for (resource, verb), count in b.operator_requests.most_common()
             if count / b.n >= 0.005]  # fmt: skip
    return f"Operator's requests per model at N={b.n}: " + ", ".join(parts) + "."


def cpu_shares(b: Burst) -> str:
    """Where the machine's CPU went at one N, from the first create until every claim showed granted and every
    Job existed."""
    cores = os.cpu_count() or 1
    window = max(b.decided, b.jobs)
    used = {"operator": b.cpu_seconds, **b.cpu_by_process}
    named = sum(used.values())
    parts = [f"{name} {seconds:.1f}" for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]) if seconds >= 0.05]
    return (f"CPU over the burst at N={b.n}, from the first create until every claim showed granted and every Job "
            f"existed ({window:.1f} s, {window * cores:.0f} core-seconds on {cores} cores): {b.machine_busy:.1f} s "
            f"busy ({b.machine_busy / (window * cores):.0%}); seconds by process: " + ", ".join(parts)
            + f", everything else {max(b.machine_busy - named, 0.0):.1f}.")


def section(bursts: list[Burst], server: str, threads: int) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    machine = f"{os.cpu_count()} cores ({platform.machine()}, {python})"
    largest = max(bursts, key=lambda b: b.n)
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    same = ", as the chart's Deployment sets it" if threshold == CHART_MMAP_THRESHOLD else ""
    malloc = f"MALLOC_MMAP_THRESHOLD_={threshold}{same}" if threshold else "glibc's default malloc"
    return f"""{SECTION}

Produced by `bench/control_plane.py` on {when}.
Machine: {machine}, shared with other work; the local single-node cluster's kube-apiserver {server},
its etcd, controllers and kubelet run on it too, and so does this benchmark's watch of every model.
For each N: a fresh namespace, one `fcfs` PrivacyBudget large enough for every claim, and a fresh
operator process serving that namespace ({malloc}). After one warm-up model (granted, its
train Job created: the operator leads and has calibrated the plan, which every model shares), N
identical SecureModels (pvc source, ε=1, one GPU each: the train Jobs are created, their pods stay
Pending) are created by {threads} clients at once. Times are from the first create. Memory is the
operator's resident set (`/proc/<pid>/status`): after start-up and the warm-up, and its peak
(VmHWM) when every Job existed and again once every model was deleted; CPU is its user + system
time over the burst. API requests are the API server's `apiserver_request_total` over the burst:
the operator's are the reads and writes (no LIST or WATCH) on the kinds it owns, less the N
creates, and include the one Event per Job the job controller posts and the volume binder's
writes of each artifacts PVC; *all* is every request the API server served meanwhile. Goal
(issue 14): 1000 models granted within 60 s with the operator under 300 MiB.

{table(bursts)}

{breakdown(largest)}

{cpu_shares(largest)}
"""


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
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="models per burst")
    parser.add_argument("--threads", type=int, default=32, help="clients creating the models")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each wait of a burst may take")
    parser.add_argument("--kubeconfig", type=Path,
                        default=Path(os.environ.get("KUBECONFIG") or REPO / ".cluster" / "kubeconfig"))  # fmt: skip
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    # The operator inherits this environment: run it with the malloc setting of the chart's Deployment.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", CHART_MMAP_THRESHOLD)
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(args.kubeconfig), client_configuration=config)
    config.connection_pool_maxsize = args.threads + 8  # the creating clients, the watches and the metrics
    client = kubernetes.client.ApiClient(config)
    if chart_operator_running(client):
        print("the chart's operator runs in the cluster: uninstall it (or scale it to 0) first", file=sys.stderr)
        return 2
    server = kubernetes.client.VersionApi(client).get_code().git_version
    add_ledger_writer(args.kubeconfig)
    bursts = []
    for n in args.sizes:
        result = burst(client, args.kubeconfig, n, args.threads, args.timeout)
        bursts.append(result)
        print(f"N={n}: {result}", flush=True)
    text = section(bursts, server, args.threads)
    write(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
