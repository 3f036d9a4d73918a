#!/usr/bin/env python3
"""Keep the chart the one source of the install manifests: ``hack/render-deploy.py [--check]``.

- ``charts/securemodel-operator/files/crds/`` becomes a byte-for-byte copy of ``crds/`` (Helm
  reads files only inside the chart; ``crds/`` itself is generated from ``securemodel/api``).
- ``deploy/`` becomes ``helm template`` of the chart with ``ci/local-cluster-values.yaml`` (the
  images ``make images`` builds, never pulled), split into one file per part, in the order
  ``kubectl apply -f deploy/`` needs.

``--check`` writes nothing and exits 1 when either is stale. Helm: ``$HELM``, else the binary
``make cluster`` builds (hack/build-binaries.sh, at the version pinned in hack/versions.env),
else ``.cluster/bin/helm``; without one, only the copy is made or checked, and it exits 2.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "securemodel-operator"
CHART_CRDS = CHART / "files" / "crds"
DEPLOY = REPO / "deploy"
RELEASE = "securemodel-operator"
NAMESPACE = "securemodel-system"
VALUES = CHART / "ci" / "local-cluster-values.yaml"
HEADER = (
    "# Generated from charts/securemodel-operator by hack/render-deploy.py (helm template with\n"
    "# ci/local-cluster-values.yaml). Do not edit: change the chart and run it again.\n"
)
# Each template of the chart, and the deploy/ file its objects go to.
PARTS = {
    "namespace.yaml": "00-namespace.yaml",
    "serviceaccount.yaml": "10-rbac.yaml",
    "rbac.yaml": "10-rbac.yaml",
    "roles.yaml": "15-roles.yaml",
    "deployment.yaml": "20-operator.yaml",
    "service.yaml": "20-operator.yaml",
    "poddisruptionbudget.yaml": "20-operator.yaml",
    "admission.yaml": "30-admission.yaml",
    "servicemonitor.yaml": "40-monitoring.yaml",
}
SOURCE = re.compile(rf"^# Source: {RELEASE}/templates/(?P<template>\S+)\n", re.MULTILINE)


def versions() -> dict[str, str]:
    """hack/versions.env as a dict."""
    pairs = (line.split("=", 1) for line in (REPO / "hack" / "versions.env").read_text().splitlines())
    return {key: value for key, value in (p for p in pairs if len(p) == 2 and not p[0].startswith("#"))}


def helm_binary() -> Path | None:
    """The Helm to render with: $HELM, the cached build of the pinned version, or the cluster's."""
    if os.environ.get("HELM"):
        return Path(os.environ["HELM"])
    v = versions()
    cache = Path(os.environ.get("SECUREMODEL_CACHE", "/var/cache/securemodel"))
    key = f"k8s-{v['KUBE_VERSION']}-etcd-{v['ETCD_VERSION']}-coredns-{v['COREDNS_VERSION']}-helm-{v['HELM_VERSION']}"
    for candidate in (cache / "bin" / key / "helm", REPO / ".cluster" / "bin" / "helm"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def chart_crds() -> dict[str, str]:
    """File name to text of the chart's copy of crds/."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((REPO / "crds").glob("*.yaml"))}


def helm(binary: Path, *args: str) -> str:
    """Run Helm; its stdout. Capabilities are the pinned Kubernetes version, not Helm's built-in one."""
    command = [str(binary), *args, "--kube-version", versions()["KUBE_VERSION"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr}")
    return result.stdout


def render_deploy(binary: Path) -> dict[str, str]:
    """File name to text of deploy/, rendered from the chart."""
    out = helm(
        binary, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests", "--values", str(VALUES)
    )
    files: dict[str, list[str]] = {}
    for document in out.split("\n---\n"):
        document = document.removeprefix("---\n")
        match = SOURCE.match(document)
        if match is None:
            raise ValueError(f"a rendered document without a '# Source:' line: {document[:200]!r}")
        template = match["template"]
        if template not in PARTS:
            raise ValueError(f"templates/{template} has no file in deploy/: add it to PARTS in {__file__}")
        files.setdefault(PARTS[template], []).append(document[match.end() :].strip("\n") + "\n")
    return {name: HEADER + "---\n" + "---\n".join(docs) for name, docs in sorted(files.items())}


def _differences(directory: Path, wanted: dict[str, str]) -> list[str]:
    problems = [
        name
        for name, text in wanted.items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
    return problems + sorted(p.name for p in directory.glob("*.yaml") if p.name not in wanted)


def stale_crds() -> list[str]:
    """The files of the chart's crds copy that are missing, outdated or left over."""
    return _differences(CHART_CRDS, chart_crds())


def stale_deploy(binary: Path) -> list[str]:
    """The files of deploy/ that differ from what the chart renders."""
    return _differences(DEPLOY, render_deploy(binary))


def _replace(directory: Path, wanted: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.yaml"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/render-deploy.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the copy or deploy/ is stale; write nothing")
    args = parser.parse_args(argv)
    binary = helm_binary()
    if args.check:
        problems = [CHART_CRDS / name for name in stale_crds()]
        problems += [DEPLOY / name for name in stale_deploy(binary)] if binary else []
        for path in problems:
            print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
        if problems:
            print("run: hack/render-deploy.py", file=sys.stderr)
    else:
        problems = []
        _replace(CHART_CRDS, chart_crds())
        if binary:
            _replace(DEPLOY, render_deploy(binary))
    if binary is None:
        print("deploy/ not rendered: no helm (set $HELM, or `make cluster` builds the pinned one)", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
