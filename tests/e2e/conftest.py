"""The in-cluster operator the end-to-end modules share: deploy/'s, from the images this run loaded.

It is started once per session and kept from module to module, as a cluster keeps its operator: each
module's ``operator`` fixture applies crds/ and deploy/ again (a no-op unless a module removed them, as the
Helm module does and puts back) and waits for the rollout. A Deployment found from before the session (an
earlier run's, ``make demo``'s) is restarted once, so its pods run the images just loaded under the same
tags. At the end of the session it is deleted, so no in-cluster operator runs beside the integration tests'
own operator processes (their fixture stops one anyway).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e_support import OPERATOR, OPERATOR_DEPLOYMENT
from test_cluster import REPO, kubectl


@dataclass
class Deployed:
    """The session's operator Deployment: whether it runs the images this session loaded."""

    current: bool = False


@pytest.fixture(scope="session")
def deployed_operator() -> Iterator[Deployed]:
    """The operator's Deployment for the session, deleted at its end."""
    deployed = Deployed()
    yield deployed
    kubectl(*OPERATOR, "delete", OPERATOR_DEPLOYMENT, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


@pytest.fixture(scope="module")
def operator(deployed_operator: Deployed) -> Iterator[None]:
    """The in-cluster operator, running and rolled out, for this module; its log is printed at the end."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    found = kubectl(*OPERATOR, "get", OPERATOR_DEPLOYMENT, check=False).returncode == 0
    kubectl("apply", "-f", str(REPO / "deploy"))
    if found and not deployed_operator.current:  # an earlier run's pods, started from older images of the same tags
        kubectl(*OPERATOR, "rollout", "restart", OPERATOR_DEPLOYMENT)
    deployed_operator.current = True  # a Deployment created by the apply runs the loaded images already
    kubectl(*OPERATOR, "rollout", "status", OPERATOR_DEPLOYMENT, "--timeout=180s")
    yield
    print(kubectl(*OPERATOR, "logs", OPERATOR_DEPLOYMENT, "--tail=200", check=False).stdout)
