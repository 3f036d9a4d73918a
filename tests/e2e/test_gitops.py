"""GitOps with a real Flux: the example SecureModel and PrivacyBudget kept in Git, synced into the cluster.

Needs the cluster with the GitOps loop of hack/flux.sh (the Git server on the node, Flux's
source-controller and kustomize-controller) and the in-cluster operator (test_secure_model's
fixture). The test pushes examples/privacybudget.yaml and examples/securemodel.yaml (training,
model and serving as light as the other e2e tests': the node has two cores) to a branch of its own
of the node's securemodel.git; a GitRepository and a Kustomization with ``wait: true`` sync it into
a namespace of its own, and kstatus, as kustomize-controller runs it, judges the SecureModel.

What a GitOps user relies on: the Kustomization turns Ready only once the model serves the version
in Git (not while it trains); a commit that changes the training reaches the cluster and the new
version is trained and served; and afterwards a server-side dry-run apply of the same manifests as
kustomize-controller changes nothing, so Flux sees no drift: the operator writes no field that the
Git manifest sets, and kopf's bookkeeping is not drift. Commit → Serving times are printed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pytest
import yaml

from e2e_support import condition, get, restricted_namespace
from test_cluster import REPO, apply, kubectl
from test_secure_model import SPEC

pytestmark = pytest.mark.e2e

MODEL = "tumor-classifier"  # examples/securemodel.yaml
SYNC = "clinic"  # the GitRepository, the Kustomization, and the repository's folder they sync
# The labels kustomize-controller puts on every object it applies (part of what it applies).
FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "kustomize.toolkit.fluxcd.io/namespace")
ACTIVE_PHASES = ("WaitingForBudget", "Training", "Compressing", "Deploying")


def flux_env() -> dict[str, str]:
    """The addresses hack/flux.sh serves on (hack/flux.env)."""
    lines = (REPO / "hack" / "flux.env").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def git(work: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-c", "user.name=e2e", "-c", "user.email=e2e@securemodel.local", *args],
                          cwd=work, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 or not check, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def manifests(epochs: int) -> list[dict[str, Any]]:
    """The example budget as it is, and the example model with the e2e tests' light training of ``epochs``."""
    budget = yaml.safe_load((REPO / "examples" / "privacybudget.yaml").read_text(encoding="utf-8"))
    model = yaml.safe_load((REPO / "examples" / "securemodel.yaml").read_text(encoding="utf-8"))
    model["spec"].update(model=SPEC["model"], serving=SPEC["serving"], training={**SPEC["training"], "epochs": epochs})
    return [budget, model]


def as_applied(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """``objects`` as kustomize-controller applies them: in the target namespace, with its labels."""
    applied = json.loads(json.dumps(objects))
    for obj in applied:
        obj["metadata"]["namespace"] = namespace
        obj["metadata"].setdefault("labels", {}).update(dict(zip(FLUX_LABELS, (SYNC, namespace), strict=True)))
    return applied


def serves_spec(model: dict[str, Any]) -> bool:
    """Whether the model serves the version of its current spec."""
    status = model.get("status") or {}
    return (
        status.get("phase") == "Serving"
        and status.get("observedGeneration") == model["metadata"]["generation"]
        and condition(model, "Ready").get("status") == "True"
        and status.get("servingVersion") == status.get("version")
    )


def flux_ready(kustomization: dict[str, Any], commit: str) -> bool:
    """Whether the Kustomization is Ready with ``commit`` applied and healthy."""
    applied = (kustomization.get("status") or {}).get("lastAppliedRevision") or ""
    return condition(kustomization, "Ready").get("status") == "True" and applied.endswith(commit)


def since(obj: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(condition(obj, "Ready")["lastTransitionTime"].replace("Z", "+00:00"))


def no_drift(namespace: str, objects: list[dict[str, Any]]) -> None:
    """A server-side dry-run apply of ``objects`` by kustomize-controller's field manager changes nothing."""
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": as_applied(objects, namespace)})
    diff = kubectl("diff", "--server-side", "--field-manager=kustomize-controller", "-f", "-", stdin=doc, check=False)
    assert diff.returncode == 0, f"drift (kubectl diff exit {diff.returncode}):\n{diff.stdout}{diff.stderr}"


@pytest.fixture(scope="module")
def gitops(operator: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A namespace synced by Flux from a branch of the node's Git repository; the branch's work tree."""
    env = flux_env()
    health = f"http://127.0.0.1:{env['KUSTOMIZE_CONTROLLER_HEALTH_PORT']}/readyz"
    try:
        urlopen(health, timeout=5).close()  # noqa: S310 (a fixed local URL)
    except URLError as error:
        pytest.fail(f"Flux is not running ({health}: {error}): run hack/flux.sh")
    with restricted_namespace("e2e-gitops") as namespace:
        url, branch = f"http://127.0.0.1:{env['GIT_HTTP_PORT']}/securemodel.git", f"e2e/{namespace}"
        work = tmp_path_factory.mktemp("gitops")
        git(work, "init", "-q", f"--initial-branch={branch}")
        git(work, "remote", "add", "origin", url)
        source = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": SYNC},
                  "spec": {"url": url, "ref": {"branch": branch}, "interval": "10s"}}  # fmt: skip
        # wait: kstatus must find every object applied Current before the Kustomization is Ready. No prune: the
        # teardown deletes the budget itself, after the model has settled its claim.
        sync = {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": SYNC},
                "spec": {"sourceRef": {"kind": "GitRepository", "name": SYNC}, "path": f"./{SYNC}",
                         "targetNamespace": namespace, "interval": "10s", "retryInterval": "10s", "timeout": "10m",
                         "wait": True, "prune": False}}  # fmt: skip
        apply(namespace, source, sync)
        yield namespace, work
        print(kubectl("-n", namespace, "get", "gitrepository,kustomization", "-o", "yaml", check=False).stdout)
        kubectl("-n", namespace, "delete", "kustomization,gitrepository", "--all", "--timeout=60s", check=False)
        git(work, "push", "-q", "origin", "--delete", branch, check=False)


def push(work: Path, objects: list[dict[str, Any]], message: str) -> tuple[str, float]:
    """Commit ``objects`` as the files of the synced folder and push; the commit and when it was pushed."""
    folder = work / SYNC
    folder.mkdir(exist_ok=True)
    for obj in objects:
        (folder / f"{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    git(work, "add", SYNC)
    git(work, "commit", "-q", "-m", message)
    commit = git(work, "rev-parse", "HEAD")
    git(work, "push", "-q", "origin", "HEAD")
    return commit, time.monotonic()


def follow(
    namespace: str, commit: str, pushed: float, wrong: list[str], timeout: float = 900, previous: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Watch Flux and the model until the Kustomization is Ready at ``commit`` and the model serves its spec
    (a version other than ``previous``, the one served before the commit).

    Adds to ``wrong`` each time Flux is Ready at ``commit`` while the model does not serve (the Kustomization
    is read first: a model read after it that does not serve did not serve then either). Returns the last
    Kustomization and model; prints every change of what both say and the commit → Serving time.
    """
    seen: list[str] = []
    waited = False  # Flux was seen not Ready at the commit while the model worked on the spec's version
    serving_at: float | None = None
    deadline = pushed + timeout
    while True:
        sync = get(namespace, "kustomization", SYNC)
        found = kubectl("-n", namespace, "get", f"securemodel/{MODEL}", "-o", "json", check=False)
        model = json.loads(found.stdout) if found.returncode == 0 else {}
        ready, status = flux_ready(sync, commit), model.get("status") or {}
        serving = bool(model) and serves_spec(model) and status.get("version") != previous
        if ready and not serving:
            # kstatus judges an object without status (the operator has not written it yet) Current.
            wrong.append(f"Flux Ready at {commit[:8]} {time.monotonic() - pushed:.0f} s after the push while the "
                         f"model does not serve its spec: {json.dumps(status)}")  # fmt: skip
        working = status.get("phase") in ACTIVE_PHASES or condition(model, "Reconciling").get("status") == "True"
        waited |= not ready and working and status.get("observedGeneration") == model["metadata"].get("generation")
        flux = condition(sync, "Ready")
        state = (f"Flux {flux.get('status')}/{flux.get('reason')}; model {status.get('phase')} "
                 f"Ready={condition(model, 'Ready').get('status')} Reconciling={condition(model, 'Reconciling').get('status')} "
                 f"Stalled={condition(model, 'Stalled').get('status')} serving={status.get('servingVersion')}")  # fmt: skip
        if not seen or seen[-1].split("] ", 1)[1] != state:
            seen.append(f"[{time.monotonic() - pushed:5.0f}s] {state}")
        if serving and serving_at is None:
            serving_at = time.monotonic()
        if ready and serving:
            print("\n".join(seen))
            print(f"GitOps: commit {commit[:8]} → Serving in {serving_at - pushed:.0f} s, "
                  f"→ Flux Ready in {time.monotonic() - pushed:.0f} s")  # fmt: skip
            assert waited, "Flux was never seen waiting for the model: the model was never seen at work"
            return sync, model
        if time.monotonic() > deadline:
            print("\n".join(seen))
            pytest.fail(f"timed out after {timeout:.0f} s waiting for Flux at {commit[:8]} and the model serving")
        time.sleep(1)


def test_git_commits_reach_the_cluster_and_flux_waits_for_serving(gitops: tuple[str, Path]) -> None:
    namespace, work = gitops
    wrong: list[str] = []  # Flux Ready while the model did not serve: collected, so the later steps still run
    first = manifests(epochs=SPEC["training"]["epochs"])
    commit, pushed = push(work, first, "the example model and its budget")
    sync, model = follow(namespace, commit, pushed, wrong)
    assert since(sync) >= since(model), "Flux's Ready turned True before the model's"
    no_drift(namespace, first)
    version = model["status"]["version"]

    changed = manifests(epochs=SPEC["training"]["epochs"] + 1)
    commit, pushed = push(work, changed, "one more epoch")
    sync, model = follow(namespace, commit, pushed, wrong, previous=version)
    assert model["spec"]["training"]["epochs"] == SPEC["training"]["epochs"] + 1
    assert model["status"]["version"] != version, "the changed training made no new version"
    assert condition(model, "Trained").get("status") == "True"
    no_drift(namespace, changed)
    assert not wrong, "\n".join(wrong)
