"""The operator claims SecureModels' ε from PrivacyBudgets in a real API server, exactly.

Every model trains on builtin://wine (143 training examples) for one epoch with the PLD
accountant (three steps), so calibrating its noise takes about a second. Budgets compose the
claims' DP-SGD mechanisms, so their sizes are worked out from the same calibration here.
"""

import json
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from ledger_support import commit_claim, submit_claim
from securemodel.api import GROUP, VERSION
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.settings import FINALIZER
from securemodel.privacy import BudgetSpec, Consumer, DpSgd, Ledger, calibrate_dp_sgd, submit, totals
from securemodel.privacy.composition import composed_epsilon, multiset

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
API_VERSION = f"{GROUP}/{VERSION}"


def budget(name: str, epsilon: float, policy: str = "fcfs", sources: tuple[str, ...] = ("builtin://wine",)) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "PrivacyBudget", "metadata": {"name": name},
            "spec": {"epsilon": epsilon, "delta": 1e-5, "policy": policy, "data": {"sources": list(sources)}}}  # fmt: skip


# builtin://wine's size on a volume: the same q and steps, so the same calibration, as builtin://wine, but
# other data (the file is never read: granted models pend on a GPU the node does not have).
WINE_COPY = {"source": "pvc://copies/wine.npz", "samples": 178, "schema": {"label": {"classes": ["a", "b", "c"]}}}


def model(name: str, budget_ref: str, epsilon: float, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"architecture": "mlp"},
        "data": {"source": "builtin://wine"},
        "privacy": {"budgetRef": budget_ref, "epsilon": epsilon, "accountant": "prv"},
        "training": {"epochs": 1, "batchSize": 64},
        # A GPU this node does not have: a granted model's train pod stays Pending and reads nothing.
        "resources": {"gpus": 1},
    }
    for section, values in overrides.items():
        spec[section] = {**spec.get(section, {}), **values}
    return {"apiVersion": API_VERSION, "kind": "SecureModel", "metadata": {"name": name}, "spec": spec}


def apply(kubectl: Kubectl, namespace: str, *objects: dict[str, Any]) -> None:
    """``kubectl apply`` the objects in one request, as a user applies a directory."""
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    result = kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert result.returncode == 0, result.stderr


def items(api_client: kubernetes.client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]


def get(api_client: kubernetes.client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)


def claims(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    return (get(api_client, namespace, "privacybudgets", name).get("status") or {}).get("claims", [])


def reserved(obj: dict[str, Any]) -> tuple[str, str] | None:
    """The (status, reason) of a model's BudgetReserved condition."""
    for condition in (obj.get("status") or {}).get("conditions", ()):
        if condition["type"] == "BudgetReserved":
            return condition["status"], condition["reason"]
    return None


def decided(api_client: kubernetes.client.ApiClient, namespace: str, count: int) -> list[dict[str, Any]]:
    """The models once ``count`` of them show their claim Reserved or Waiting, else an empty list."""
    models = items(api_client, namespace, "securemodels")
    states = [reserved(m) for m in models]
    done = sum(1 for s in states if s in (("True", "Reserved"), ("False", "Waiting")))
    return models if len(models) == done == count else []


def held(budget: dict[str, Any]) -> float:
    """The composed ε of the budget's Committed and Reserved claims, recomputed from its ledger."""
    sums = totals(Ledger.from_status(budget.get("status")), BudgetSpec.from_dict(budget["spec"]))
    return sums.committed + sums.reserved


def wine_mechanism(epsilon: float) -> DpSgd:
    """The DP-SGD run the operator calibrates for model() at ``epsilon`` (builtin://wine, one epoch)."""
    calibration = calibrate_dp_sgd(epsilon, 1e-5, 143, 64, 1, "prv")
    return DpSgd(calibration.noise_multiplier, calibration.sample_rate, calibration.steps)


def replayed(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> list[str]:
    """The states the pure ledger rules give the budget's claims, submitted in the ledger's order with their
    recorded mechanisms: what the operator's transactions must have written."""
    budget = get(api_client, namespace, "privacybudgets", name)
    spec, ledger = BudgetSpec.from_dict(budget["spec"]), Ledger()
    for claim in Ledger.from_status(budget["status"]).claims:
        ledger = submit(ledger, spec, claim.consumer, claim.epsilon, claim.delta, claim.updated,
                        mechanism=claim.mechanism).ledger  # fmt: skip
    return [str(c.state) for c in ledger.claims]


def test_twenty_models_on_a_budget_for_five_survive_a_killed_operator(
    api_client: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    start_operator: Callable[..., Any],
    watch_budget: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    # A budget that five of these claims compose within, and six do not.
    run = wine_mechanism(1.0)
    five, six = (composed_epsilon(multiset({run: n}), 1e-5) for n in (5, 6))
    apply(kubectl, namespace, budget("wine", round((five + six) / 2, 4)))
    since = get(api_client, namespace, "privacybudgets", "wine")["metadata"]["resourceVersion"]
    watch = watch_budget(namespace, "wine", since)
    first = start_operator(namespace)
    # Each asks for a GPU, which this cluster has none of: the training pods of granted claims stay
    # Pending, never start, so a deleted model's claim may be released.
    apply(kubectl, namespace, *(model(f"m{n:02}", "wine", 1.0, resources={"gpus": 1}) for n in range(20)))

    # Kill the operator as soon as the first claims are in the ledger, mid-way through the burst.
    before = wait_for(lambda: claims(api_client, namespace, "wine"), timeout=60, what="the first claims")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    start_operator(namespace)
    models = wait_for(lambda: decided(api_client, namespace, 20), timeout=90, what="all 20 claims decided")

    ledger = claims(api_client, namespace, "wine")
    by_uid = {c["consumer"]["uid"]: c for c in ledger}
    assert len(ledger) == len(by_uid) == 20, "one claim per model, none counted twice"
    assert set(by_uid) == {m["metadata"]["uid"] for m in models}
    assert sorted(c["state"] for c in ledger) == ["Reserved"] * 5 + ["Waiting"] * 15
    for claim in before:  # what the killed operator wrote stands: same claims, states only moved forward
        now = by_uid[claim["consumer"]["uid"]]
        assert now["epsilon"] == claim["epsilon"]
        assert (claim["state"], now["state"]) in {
            ("Waiting", "Waiting"), ("Waiting", "Reserved"), ("Reserved", "Reserved")
        }  # fmt: skip
    for item in models:
        state = by_uid[item["metadata"]["uid"]]["state"]
        assert reserved(item) == (("True", "Reserved") if state == "Reserved" else ("False", "Waiting"))
        # a granted model moves on to Training as soon as its (forever Pending) train Job exists
        assert item["status"]["phase"] in (("WaitingForBudget", "Training") if state == "Reserved" else ("WaitingForBudget",))
        assert item["status"]["privacy"]["epsilonClaimed"] == 1
        assert item["status"]["privacy"]["steps"] == 3 and item["status"]["privacy"]["noiseMultiplier"] > 0
        assert FINALIZER in item["metadata"]["finalizers"]
        assert by_uid[item["metadata"]["uid"]]["mechanism"]["type"] == "DPSGD"

    # Deleting a reserved model releases its claim, and the first waiting claim (fcfs) gets it.
    gone = next(c for c in ledger if c["state"] == "Reserved")["consumer"]
    heir = next(c for c in ledger if c["state"] == "Waiting")["consumer"]
    deleted = kubectl("delete", "-n", namespace, "smodel", gone["name"], "--timeout=60s", timeout=90)
    assert deleted.returncode == 0, deleted.stderr
    wait_for(
        lambda: reserved(get(api_client, namespace, "securemodels", heir["name"])) == ("True", "Reserved"),
        timeout=30,
        what=f"{heir['name']} granted the released ε",
    )
    after = {c["consumer"]["uid"]: c["state"] for c in claims(api_client, namespace, "wine")}
    assert (after[gone["uid"]], after[heir["uid"]]) == ("Released", "Reserved")
    assert sorted(after.values()).count("Reserved") == 5

    versions = watch.stop()
    assert len(versions) >= 3
    for version in versions:
        status = version.get("status") or {}
        assert held(version) <= version["spec"]["epsilon"], status
        uids = [c["consumer"]["uid"] for c in status.get("claims", ())]
        assert len(uids) == len(set(uids))


def test_dpf_grants_more_of_many_small_and_a_few_large_claims_than_fcfs(
    api_client: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    """PrivateKube's single-block microbenchmark in miniature: two elephants arrive first, then ten mice.

    The budget (5.5) holds two elephants composed but not the mice behind them, or one elephant and all mice.
    """
    # Two budgets of one namespace protect disjoint data: builtin://wine and a copy of its size.
    apply(kubectl, namespace, budget("fcfs", 5.5), budget("dpf", 5.5, policy="dpf", sources=("pvc://copies/",)))
    start_operator(namespace)
    workload = [4.0, 4.0] + [0.5] * 10
    data = {"fcfs": {"source": "builtin://wine"}, "dpf": WINE_COPY}
    for number, epsilon in enumerate(workload):  # one arrival at a time: arrival order is the policy's input
        apply(kubectl, namespace, *(model(f"{policy}-{number:02}", policy, epsilon, resources={"gpus": 1},
                                          data=data[policy]) for policy in ("fcfs", "dpf")))  # fmt: skip
        wait_for(
            lambda n=number: all(len(claims(api_client, namespace, policy)) == n + 1 for policy in ("fcfs", "dpf")),
            timeout=30,
            what=f"arrival {number} claimed from both budgets",
        )
    granted = {
        policy: [c["epsilon"] for c in claims(api_client, namespace, policy) if c["state"] == "Reserved"]
        for policy in ("fcfs", "dpf")
    }
    for policy in ("fcfs", "dpf"):  # exactly what the pure rules decide for this arrival order
        assert [c["state"] for c in claims(api_client, namespace, policy)] == replayed(api_client, namespace, policy)
    assert granted["fcfs"][:2] == [4, 4], "the elephants took most of the budget"
    assert granted["dpf"].count(0.5) == 10, "every mouse"
    assert len(granted["dpf"]) > len(granted["fcfs"])
    dpf = get(api_client, namespace, "privacybudgets", "dpf")
    assert dpf["status"]["epsilonUnlocked"] == 5.5
    assert dpf["status"]["epsilonReserved"] == pytest.approx(held(dpf)) and held(dpf) <= 5.5


@pytest.mark.usefixtures("operator")
def test_models_report_missing_budgets_refusals_and_calibration_failures_then_recover(
    api_client: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    apply(
        kubectl,
        namespace,
        budget("wine", 3.0, sources=("builtin://wine", "builtin://iris", "pvc://clinic/")),
        model("orphan", "later", 1.0, data={"source": "builtin://digits"}),
        model("greedy", "wine", 3.5),
        model("careless", "wine", 1.0, privacy={"delta": 1e-3}),
        model("hasty", "wine", 1.0, data={"source": "builtin://iris"}, training={"batchSize": 121}),
        model("mounted", "wine", 1.0, data={"source": "pvc://clinic/train.npz", "samples": 1000,
                                             "schema": {"label": {"classes": ["a", "b", "c"]}}}),
    )

    def condition(name: str) -> tuple[str, str] | None:
        return reserved(get(api_client, namespace, "securemodels", name))

    expected = {
        "orphan": ("False", "BudgetNotFound"),
        "greedy": ("False", "EpsilonAboveBudget"),
        "careless": ("False", "DeltaAboveBudget"),
        "hasty": ("False", "CalibrationFailed"),
        "mounted": ("True", "Reserved"),
    }
    wait_for(lambda: {name: condition(name) for name in expected} == expected, timeout=60, what=str(expected))
    for name in ("greedy", "careless", "hasty"):
        obj = get(api_client, namespace, "securemodels", name)
        assert obj["status"]["phase"] == "Failed"
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == expected[name][1] and ready["message"]
    hasty = get(api_client, namespace, "securemodels", "hasty")["status"]["conditions"]
    message = next(c["message"] for c in hasty if c["type"] == "BudgetReserved")
    assert "batchSize 121 exceeds the 120 training examples of builtin://iris" in message
    mounted = get(api_client, namespace, "securemodels", "mounted")["status"]["privacy"]
    assert mounted["sampleRate"] == 64 / 1000 and mounted["steps"] == 16, "q over the file's 1000 examples, trained whole"
    assert sorted(c["consumer"]["name"] for c in claims(api_client, namespace, "wine")) == [
        "careless", "greedy", "mounted"
    ]  # fmt: skip

    # Fixing the spec, creating the budget, and raising ε each let a model through.
    fixed = model("hasty", "wine", 2.9, data={"source": "builtin://iris"}, training={"batchSize": 32})
    apply(kubectl, namespace, fixed)
    apply(kubectl, namespace, budget("later", 1.0, sources=("builtin://digits",)))
    wait_for(lambda: condition("orphan") == ("True", "Reserved"), what="orphan granted by the new budget")
    wait_for(lambda: condition("hasty") == ("False", "Waiting"), what="hasty waiting: with mounted's ε 1 it composes above 3")
    apply(kubectl, namespace, budget("wine", 4.0, sources=("builtin://wine", "builtin://iris", "pvc://clinic/")))
    wait_for(lambda: condition("hasty") == ("True", "Reserved"), what="hasty granted after ε was raised")
    wine = get(api_client, namespace, "privacybudgets", "wine")
    status = wine["status"]
    assert status["epsilonReserved"] == pytest.approx(held(wine)) and 2.9 < status["epsilonReserved"] < 3.9
    assert status["epsilonSummed"] == 3.9
    assert status["epsilonAvailable"] == pytest.approx(4.0 - status["epsilonReserved"]) and status["phase"] == "Available"
    assert status["observedGeneration"] == 2
    # A refused claim is final for its version only: asking for less is a new version, which claims anew.
    apply(kubectl, namespace, model("greedy", "wine", 0.5))
    wait_for(lambda: condition("greedy") == ("True", "Reserved"), what="greedy granted for its new version")
    greedy = [c for c in claims(api_client, namespace, "wine") if c["consumer"]["name"] == "greedy"]
    assert [(c["state"], c["epsilon"]) for c in greedy] == [("Rejected", 3.5), ("Reserved", 0.5)]
    assert FINALIZER in get(api_client, namespace, "securemodels", "greedy")["metadata"]["finalizers"]


def test_a_budget_with_committed_spend_is_only_deleted_with_the_override(
    api_client: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("spent", 5.0), budget("unspent", 5.0, sources=("builtin://iris",)))
    start_operator(namespace)
    ref = BudgetRef(namespace, "spent")
    submit_claim(api_client, ref, Consumer("SecureModel", namespace, "m", "uid-m"), 2.0, 1e-5)
    commit_claim(api_client, ref, "uid-m", 1.5)  # what the training stage does once its pod has run
    def finalized(name: str) -> bool:
        return FINALIZER in get(api_client, namespace, "privacybudgets", name)["metadata"].get("finalizers", [])

    for name in ("spent", "unspent"):
        wait_for(lambda n=name: finalized(n), what=f"the finalizer on {name}")

    assert kubectl("delete", "-n", namespace, "pbudget", "unspent", "--timeout=30s", timeout=60).returncode == 0
    # The API server refuses the deletion (the admission policy): the budget is not even marked for deletion.
    refused = kubectl("delete", "-n", namespace, "pbudget", "spent", "--wait=false")
    assert refused.returncode != 0
    assert "holds spent privacy" in refused.stderr and 'allow-delete-with-spend="true"' in refused.stderr
    assert "deletionTimestamp" not in get(api_client, namespace, "privacybudgets", "spent")["metadata"]

    annotated = kubectl("annotate", "-n", namespace, "pbudget", "spent", "securemodel.io/allow-delete-with-spend=true")
    assert annotated.returncode == 0, annotated.stderr

    def gone() -> bool:
        try:
            get(api_client, namespace, "privacybudgets", "spent")
        except kubernetes.client.ApiException as error:
            return error.status == 404
        return False

    assert kubectl("delete", "-n", namespace, "pbudget", "spent", "--wait=false").returncode == 0
    wait_for(gone, what="the annotated budget deleted")



def ready(obj: dict[str, Any]) -> tuple[str, str] | None:
    """The (status, reason) of an object's Ready condition."""
    for condition in (obj.get("status") or {}).get("conditions", ()):
        if condition["type"] == "Ready":
            return condition["status"], condition["reason"]
    return None


@pytest.mark.usefixtures("operator")
def test_a_budget_is_charged_only_for_the_data_it_covers_and_no_datum_has_two_ledgers(
    api_client: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("wine", 5.0), model("covered", "wine", 1.0),
          model("elsewhere", "wine", 1.0, data={"source": "builtin://iris"}),
          model("foreign", "wine", 1.0, model={"image": "registry.example/exfiltrate:1"}))  # fmt: skip

    def condition(name: str) -> tuple[str, str] | None:
        return reserved(get(api_client, namespace, "securemodels", name))

    wait_for(lambda: condition("covered") == ("True", "Reserved"), timeout=90, what="the covered model granted")
    wait_for(lambda: condition("elsewhere") == ("False", "DataNotCovered"), what="the uncovered model refused")
    message = next(c["message"] for c in get(api_client, namespace, "securemodels", "elsewhere")["status"]["conditions"]
                   if c["type"] == "BudgetReserved")  # fmt: skip
    assert "PrivacyBudget wine protects builtin://wine, not builtin://iris" in message
    wait_for(lambda: condition("foreign") == ("False", "ImageNotAllowed"), what="the unlisted image refused")
    assert not [p for p in kubernetes.client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
                if p.metadata.labels.get("securemodel.io/model") == "foreign"], "no pod of an unlisted image"  # fmt: skip
    assert [c["consumer"]["name"] for c in claims(api_client, namespace, "wine")] == ["covered"]

    # A fresh budget over some of the same data would reset its spend: neither budget grants while both exist.
    apply(kubectl, namespace, budget("fresh", 5.0, sources=("builtin://wine?shard=0&of=2",)),
          model("second", "fresh", 1.0, data={"source": "builtin://wine?shard=0&of=2"}), model("third", "wine", 0.5))  # fmt: skip
    for name, other in (("wine", "fresh"), ("fresh", "wine")):
        wait_for(lambda n=name: ready(get(api_client, namespace, "privacybudgets", n)) == ("False", "DataOverlap"),
                 what=f"{name} not ready: it shares data")  # fmt: skip
        text = next(c["message"] for c in get(api_client, namespace, "privacybudgets", name)["status"]["conditions"]
                    if c["type"] == "Ready")  # fmt: skip
        assert f"PrivacyBudget {other} of this namespace covers some of the same data" in text
    for name in ("second", "third"):
        wait_for(lambda n=name: condition(n) == ("False", "BudgetOverlaps"), what=f"{name} refused: two ledgers")
    assert condition("covered") == ("True", "Reserved"), "what was granted stays granted"
    assert [c["consumer"]["name"] for c in claims(api_client, namespace, "fresh")] == []

    # The data steward deletes the duplicate (it holds no spend): the first budget grants again.
    assert kubectl("delete", "-n", namespace, "pbudget", "fresh", "--timeout=30s", timeout=60).returncode == 0
    wait_for(lambda: ready(get(api_client, namespace, "privacybudgets", "wine")) == ("True", "BudgetAvailable"),
             what="wine ready again")  # fmt: skip
    wait_for(lambda: condition("third") == ("True", "Reserved"), what="third granted once the data has one ledger")
    # Sources may be added, never removed (a budget never drops data it may have charged for).
    shrunk = budget("wine", 5.0, sources=("builtin://iris",))
    result = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(shrunk))
    assert result.returncode != 0 and "spec.data.sources may only grow" in result.stderr
