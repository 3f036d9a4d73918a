"""charts/securemodel-operator: lint, what it renders for the values that matter, and deploy/ rendered from it.

Helm is the binary ``make cluster`` builds at the pinned version (or ``$HELM``); the tests that
need it skip, saying so, only where there is none. Rendering runs no cluster.
"""

import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "securemodel-operator"
CRD_NAMES = ["federatedrounds.securemodel.io", "privacybudgets.securemodel.io", "securemodels.securemodel.io"]
Objects = list[dict[str, Any]]


def _render_deploy_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_deploy", REPO / "hack" / "render-deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_deploy = _render_deploy_module()


@pytest.fixture(scope="module")
def helm() -> Path:
    binary: Path | None = render_deploy.helm_binary()
    if binary is None:
        pytest.skip("no helm binary: run `make cluster` (builds the pinned Helm) or set $HELM")
    return binary


def template(helm: Path, *args: str, tests: bool = False) -> Objects:
    """The objects the chart renders as release ``sm`` in namespace ``securemodel-system``."""
    extra = () if tests else ("--skip-tests",)
    out = render_deploy.helm(helm, "template", "sm", str(CHART), "--namespace", "securemodel-system", *extra, *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refused(helm: Path, *args: str) -> str:
    """The error of a render that must fail."""
    with pytest.raises(RuntimeError) as error:
        template(helm, *args)
    return str(error.value)


def only(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    match: dict[str, Any] = found[0]
    return match


def kinds(objects: Objects) -> set[str]:
    return {o["kind"] for o in objects}


def container(objects: Objects) -> dict[str, Any]:
    first: dict[str, Any] = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return first


def env(objects: Objects) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def allows(rules: Iterable[Mapping[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """Whether RBAC ``rules`` allow ``verb`` on ``resource`` (``plural`` or ``plural/sub``) of ``group``."""
    return any(
        group in rule.get("apiGroups", [])
        and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        for rule in rules
    )


# --- one source of truth ------------------------------------------------------------------------


def test_the_charts_crds_are_a_copy_of_crds() -> None:
    assert render_deploy.stale_crds() == [], "the chart's files/crds/ is stale: run hack/render-deploy.py"


def test_deploy_is_the_chart_rendered_for_the_local_cluster(helm: Path) -> None:
    assert render_deploy.stale_deploy(helm) == [], "deploy/ is stale: run hack/render-deploy.py"


def test_the_staleness_check_sees_an_edited_deploy_file(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in render_deploy.render_deploy(helm).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.setattr(render_deploy, "DEPLOY", tmp_path)
    assert render_deploy.stale_deploy(helm) == []
    edited = tmp_path / "20-operator.yaml"
    edited.write_text(edited.read_text().replace("imagePullPolicy: Never", "imagePullPolicy: Always"))
    (tmp_path / "99-extra.yaml").write_text("{}\n")
    assert render_deploy.stale_deploy(helm) == ["20-operator.yaml", "99-extra.yaml"]


def test_deploy_keeps_what_the_local_cluster_and_the_tests_rely_on() -> None:
    deploy = REPO / "deploy"
    operator = list(yaml.safe_load_all((deploy / "20-operator.yaml").read_text()))
    pod = only([d for d in operator if d], "Deployment", "securemodel-operator")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "securemodel-operator:dev"
    assert pod["containers"][0]["imagePullPolicy"] == "Never"
    worker = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}["SECUREMODEL_WORKER_IMAGE"]
    assert worker == "securemodel-worker:dev"
    rbac = [d for d in yaml.safe_load_all((deploy / "10-rbac.yaml").read_text()) if d]
    # tests/integration/test_operator_rbac.py takes the first ClusterRole of 10-rbac.yaml.
    assert next(d for d in rbac if d["kind"] == "ClusterRole")["metadata"]["name"] == "securemodel-operator"
    namespace = only([d for d in yaml.safe_load_all((deploy / "00-namespace.yaml").read_text()) if d], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not list(deploy.glob("*crd*")), "crds/ is applied on its own"


# --- lint and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))])
def test_lint_strict_passes(helm: Path, values: str | None) -> None:
    args = ["--values", str(CHART / "ci" / values)] if values else []
    out = render_deploy.helm(helm, "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "replicas=2"], "replicas"),
        (["--set", "image.tags=dev"], "tags"),
        (["--set", "crds.enabled=yes"], "crds"),
        (["--set-string", "replicaCount=two"], "replicaCount"),
        (["--set", "replicaCount=0"], "replicaCount"),
        (["--set", "image.digest=sha256:short"], "digest"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], "watchNamespaces"),
        (["--set", "serviceMonitor.interval=often"], "interval"),
        (["--set", "imagePullSecrets[0].secret=x"], "imagePullSecrets"),
    ],
)
def test_the_schema_refuses_unknown_keys_and_wrong_types(helm: Path, args: list[str], complaint: str) -> None:
    error = refused(helm, *args)
    assert "values don't meet the specifications of the schema" in error and complaint in error


def test_the_schema_lets_an_umbrella_chart_pass_globals(helm: Path) -> None:
    assert template(helm, "--set", "global.imageRegistry=registry.example.com")


# --- CRDs ---------------------------------------------------------------------------------------


def test_crds_render_from_crds_unchanged_and_kept_by_default(helm: Path) -> None:
    rendered = {o["metadata"]["name"]: o for o in template(helm) if o["kind"] == "CustomResourceDefinition"}
    assert sorted(rendered) == CRD_NAMES
    for path in sorted((REPO / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text())
        crd = rendered[source["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crds_keep_false_drops_the_policy_and_enabled_false_the_crds(helm: Path) -> None:
    unkept = [o for o in template(helm, "--set", "crds.keep=false") if o["kind"] == "CustomResourceDefinition"]
    assert len(unkept) == 3 and all("annotations" not in o["metadata"] for o in unkept)
    assert "CustomResourceDefinition" not in kinds(template(helm, "--set", "crds.enabled=false"))


# --- the operator -------------------------------------------------------------------------------


def test_defaults_two_replicas_restricted_with_a_disruption_budget(helm: Path) -> None:
    objects = template(helm)
    deployment = only(objects, "Deployment", "sm-securemodel-operator")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"selector": deployment["spec"]["selector"], "minAvailable": 1}
    assert container(objects)["image"] == "securemodel-operator:0.1.0"
    assert "Namespace" not in kinds(objects)


def test_the_pod_knows_its_name_namespace_and_the_worker_image(helm: Path) -> None:
    values = env(template(helm, "--set", "worker.image.registry=registry.example.com", "--set", "worker.image.tag=1.2"))
    assert values["SECUREMODEL_WORKER_IMAGE"] == "registry.example.com/securemodel-worker:1.2"
    assert values["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert values["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_a_digest_wins_over_the_tag(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    objects = template(
        helm, "--set", "image.registry=r.example/sm", "--set-string", "image.tag=9", "--set", f"image.digest={digest}"
    )
    assert container(objects)["image"] == f"r.example/sm/securemodel-operator@{digest}"


def test_pull_policy_and_pull_secrets(helm: Path) -> None:
    objects = template(helm, "--set", "image.pullPolicy=Never", "--set", "imagePullSecrets[0].name=regcred")
    assert container(objects)["imagePullPolicy"] == "Never"
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_scheduling_and_resources_pass_through(helm: Path) -> None:
    objects = template(
        helm,
        "--set", "nodeSelector.pool=ops",
        "--set", "tolerations[0].key=ops,tolerations[0].operator=Exists",
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
        "--set", "resources.limits.memory=1Gi",
        "--set", "podDisruptionBudget.maxUnavailable=1",
    )  # fmt: skip
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "ops"}
    assert pod["tolerations"] == [{"key": "ops", "operator": "Exists"}]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "1Gi"}
    assert only(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_leader_election_may_use_only_its_own_lease(helm: Path) -> None:
    objects = template(helm)
    role = only(objects, "Role")
    assert role["metadata"]["namespace"] == "securemodel-system"
    rules = role["rules"]
    for verb in ("get", "update"):
        assert allows(rules, "coordination.k8s.io", "leases", verb, "securemodel-operator")
        assert not allows(rules, "coordination.k8s.io", "leases", verb, "someone-elses-lease")
    assert allows(rules, "coordination.k8s.io", "leases", "create")
    assert not allows(rules, "coordination.k8s.io", "leases", "delete", "securemodel-operator")
    binding = only(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == only(objects, "ServiceAccount")["metadata"]["name"]


def test_watched_namespaces_become_arguments_and_namespaced_bindings(helm: Path) -> None:
    objects = template(helm, "--set", "watchNamespaces={clinic-a,research}")
    assert container(objects)["args"][1:] == ["--namespace=clinic-a", "--namespace=research"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding" and o["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["clinic-a", "research"]
    cluster_binding = only(objects, "ClusterRoleBinding", "sm-securemodel-operator")
    cluster_role = only(objects, "ClusterRole", cluster_binding["roleRef"]["name"])
    assert allows(cluster_role["rules"], "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert not allows(cluster_role["rules"], "", "secrets", "list")
    everywhere = template(helm)
    assert container(everywhere)["args"] == ["--health=http://0.0.0.0:8080/healthz"]
    assert only(everywhere, "ClusterRoleBinding")["roleRef"]["name"] == "sm-securemodel-operator"


def test_the_health_service_selects_the_operator_pods(helm: Path) -> None:
    objects = template(helm, "--set", "healthPort=9000")
    service = only(objects, "Service")
    assert service["spec"]["selector"] == only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "health", "port": 9000, "targetPort": "health"}]
    assert container(objects)["ports"] == [{"name": "health", "containerPort": 9000}]


# --- roles and admission ------------------------------------------------------------------------


def test_the_ml_engineer_writes_models_and_rounds_but_no_budget_status_or_secret(helm: Path) -> None:
    objects = template(helm)
    aggregated = only(objects, "ClusterRole", "securemodel-ml-engineer")
    selector = aggregated["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]
    parts = [o for o in objects if o["kind"] == "ClusterRole" and selector.items() <= o["metadata"]["labels"].items()]
    assert sorted(p["metadata"]["name"] for p in parts) == [
        "securemodel-ml-engineer-client-secrets",
        "securemodel-ml-engineer-models",
    ]
    rules = [rule for part in parts for rule in part.get("rules", [])]
    for resource in ("securemodels", "federatedrounds"):
        for verb in ("create", "update", "patch", "delete"):
            assert allows(rules, "securemodel.io", resource, verb)
    assert allows(rules, "securemodel.io", "privacybudgets", "get")
    for verb in ("create", "update", "patch", "delete", "deletecollection", "allow-delete-with-spend"):
        assert not allows(rules, "securemodel.io", "privacybudgets", verb)
    for resource in ("securemodels/status", "federatedrounds/status", "privacybudgets/status"):
        assert not allows(rules, "securemodel.io", resource, "patch")
    assert not any("secrets" in rule["resources"] for rule in rules), "client Secrets come from the operator's rules"
    assert "rules" not in only(objects, "ClusterRole", "securemodel-ml-engineer-client-secrets")


def test_the_data_steward_owns_budgets_and_the_deletion_override_but_not_their_ledger(helm: Path) -> None:
    rules = only(template(helm), "ClusterRole", "securemodel-data-steward")["rules"]
    for verb in ("create", "update", "patch", "delete", "allow-delete-with-spend"):
        assert allows(rules, "securemodel.io", "privacybudgets", verb)
    assert not allows(rules, "securemodel.io", "privacybudgets/status", "patch")
    assert not allows(rules, "securemodel.io", "securemodels", "create")
    assert not allows(rules, "", "secrets", "get")


def test_aggregation_into_view_edit_and_admin(helm: Path) -> None:
    def aggregated_to(objects: Objects) -> dict[str, set[str]]:
        prefix = "rbac.authorization.k8s.io/aggregate-to-"
        return {
            o["metadata"]["name"]: {k.removeprefix(prefix) for k in o["metadata"]["labels"] if k.startswith(prefix)}
            for o in objects
            if o["kind"] == "ClusterRole" and o["metadata"]["name"].startswith("securemodel-")
        }

    assert aggregated_to(template(helm)) == {
        "securemodel-view": {"view", "edit", "admin"},
        "securemodel-ml-engineer": set(),
        "securemodel-ml-engineer-models": {"edit", "admin"},
        "securemodel-ml-engineer-client-secrets": set(),
        "securemodel-data-steward": {"admin"},
    }
    assert set().union(*aggregated_to(template(helm, "--set", "roles.aggregateToDefaultRoles=false")).values()) == set()


def test_the_operator_may_fill_the_client_secrets_role_only_while_roles_are_on(helm: Path) -> None:
    on = only(template(helm), "ClusterRole", "sm-securemodel-operator")["rules"]
    assert allows(on, "rbac.authorization.k8s.io", "clusterroles", "update", "securemodel-ml-engineer-client-secrets")
    assert not allows(on, "rbac.authorization.k8s.io", "clusterroles", "update", "admin")
    assert not allows(on, "rbac.authorization.k8s.io", "clusterroles", "create")
    off_objects = template(helm, "--set", "roles.enabled=false")
    off = only(off_objects, "ClusterRole", "sm-securemodel-operator")["rules"]
    assert not allows(
        off, "rbac.authorization.k8s.io", "clusterroles", "update", "securemodel-ml-engineer-client-secrets"
    )
    assert not allows(off, "", "secrets", "get")
    assert "SECUREMODEL_CLIENT_SECRETS_ROLE" not in env(off_objects)
    assert [o["metadata"]["name"] for o in off_objects if o["kind"] == "ClusterRole"] == ["sm-securemodel-operator"]


def test_admission_policies_on_and_off(helm: Path) -> None:
    policies = [o["metadata"]["name"] for o in template(helm) if o["kind"] == "ValidatingAdmissionPolicy"]
    assert policies == ["privacybudget-epsilon-floor.securemodel.io", "privacybudget-deletion-override.securemodel.io",
                        "privacybudget-ledger.securemodel.io", "privacybudget-deletion.securemodel.io"]  # fmt: skip
    bindings = [o["spec"]["policyName"] for o in template(helm) if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert sorted(bindings) == sorted(policies), "every policy is bound (an unbound policy enforces nothing)"
    off = kinds(template(helm, "--set", "admissionPolicies.enabled=false"))
    assert not off & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_only_the_operators_service_account_and_the_listed_writers_write_ledgers(helm: Path) -> None:
    def writers(*args: str) -> str:
        (ledger,) = [o for o in template(helm, *args) if o["metadata"]["name"] == "privacybudget-ledger.securemodel.io"
                     and o["kind"] == "ValidatingAdmissionPolicy"]  # fmt: skip
        return next(v["expression"] for v in ledger["spec"]["variables"] if v["name"] == "writers")

    assert writers() == "['system:serviceaccount:securemodel-system:sm-securemodel-operator']"
    assert writers("--set", "admissionPolicies.ledgerWriters={dev-admin}") == (
        "['system:serviceaccount:securemodel-system:sm-securemodel-operator', 'dev-admin']"
    )


# --- monitoring, namespace, helm test -----------------------------------------------------------


def test_service_monitor_scrapes_the_serving_services(helm: Path) -> None:
    assert "ServiceMonitor" not in kinds(template(helm))
    objects = template(helm, "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prom")
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "securemodel-operator",
        "securemodel.io/component": "serve",
    }
    scoped = template(helm, "--set", "serviceMonitor.enabled=true", "--set", "watchNamespaces={clinic-a}")
    assert only(scoped, "ServiceMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["clinic-a"]}


def test_helm_test_checks_the_health_service_and_the_crds_with_the_operator_image(helm: Path) -> None:
    objects = template(helm, tests=True)
    pod = only(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    test = pod["spec"]["containers"][0]
    assert test["image"] == container(objects)["image"]
    assert test["command"][:2] == ["python", "-c"]
    compile(test["command"][2], "helm-test.py", "exec")
    assert test["command"][3:] == ["http://sm-securemodel-operator.securemodel-system.svc:8080/healthz", *CRD_NAMES]
    service = only(objects, "Service")
    assert service["metadata"]["name"] == "sm-securemodel-operator" and service["spec"]["ports"][0]["port"] == 8080
    rules = only(objects, "ClusterRole", "sm-securemodel-operator-test")["rules"]
    assert rules == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": CRD_NAMES,
            "verbs": ["get"],
        }
    ]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] != container(objects)["name"]


def test_every_value_is_in_the_values_table() -> None:
    def leaves(values: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
        for key, value in values.items():
            if isinstance(value, dict) and value and key not in FREE_FORM:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    FREE_FORM = {"resources", "nodeSelector", "podSecurityContext", "securityContext"}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [key for key in leaves(values) if f"| `{key}` |" not in readme]
    assert missing == []


def test_namespace_only_when_asked(helm: Path) -> None:
    namespace = only(template(helm, "--set", "createNamespace=true"), "Namespace")
    assert namespace["metadata"]["name"] == "securemodel-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_lint_fails_on_a_broken_values_file(helm: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("serviceMonitor: {enabled: true, unknown: 1}\n")
    with pytest.raises(RuntimeError):
        render_deploy.helm(helm, "lint", "--strict", str(CHART), "--values", str(broken))
