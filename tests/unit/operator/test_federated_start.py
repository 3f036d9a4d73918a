"""Where a round that starts from another (``fromRound``) takes the previous round's binding from (pure)."""

from __future__ import annotations

import json
from typing import Any

from securemodel.operator.federated import children
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.observe import Indexes, resolve_start
from securemodel.operator.federated.spec import parse
from securemodel.operator.federated.views import AGGREGATOR_RESULT
from securemodel.operator.secure_model.children import Owner

OWNER = Owner("r1", "research", "uid-r1")
SPEC = parse({"model": {"fromRound": "r0"}, "privacy": {"epsilon": 1.0},
              "clients": [{"name": "clinic-a", "data": {"source": "builtin://breast_cancer?shard=0&of=3"},
                           "budgetRef": "bc"}]}, "research")  # fmt: skip


def _indexes(result: dict[str, Any]) -> Indexes:
    results = {"metadata": {"name": children.results_name("r0"), "namespace": "research"},
               "data": {AGGREGATOR_RESULT: json.dumps(result)}}  # fmt: skip
    return Indexes(jobs={}, pods={}, services={}, pvcs={}, config_maps={"uid-r0": [results]}, secrets={},  # type: ignore[arg-type]
                   budgets={}, ledgers={}, secure_models={},  # type: ignore[arg-type]
                   rounds={("research", "r0"): [{"uid": "uid-r0", "rounds": 3}]})  # fmt: skip


def test_the_previous_rounds_binding_comes_from_the_round_itself_never_from_its_results_config_map() -> None:
    """A results ConfigMap edited to name an earlier round's file of the same run does not change what the
    aggregator authenticates: the previous round's uid and its spec.rounds, so that file is refused."""
    edited = {"status": "Succeeded", "artifact": "/artifacts/round-001.model", "roundsCompleted": 1}

    start = resolve_start(OWNER, SPEC, _indexes(edited))

    assert start == Start(previous_round="r0", previous_artifact="/artifacts/round-001.model", previous_uid="uid-r0",
                          previous_rounds=3)  # fmt: skip
