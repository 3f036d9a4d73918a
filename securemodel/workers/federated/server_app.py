"""The ServerApp: FedAvg over the silos' DP-SGD updates, under Flower's SecAgg+ workflow.

Per round (``rounds`` from the run configuration):

1. wait up to ``stage-timeout`` for the registered silos to be online; fewer than
   ``min-clients`` fails the run;
2. fit under ``SecAggPlusWorkflow(num_shares, reconstruction_threshold, timeout=stage-timeout)``
   (Bell et al., CCS '20): the aggregator receives masked, quantized updates and unmasks only
   their weighted sum. The workflow is Flower's; :class:`ObservedSecAggPlus` only records which
   silos answered each stage and refuses to unmask when fewer than ``min-clients`` sent a masked
   update. Without secure aggregation (``secure-aggregation=false``, for comparison) Flower's
   default fit workflow collects the plain updates;
3. with an ``evaluation-source`` (data the round's spec declares public), the ServerApp measures
   the new global model's accuracy on all of it (:class:`PublicEvaluation`). No silo evaluates:
   the ClientApp refuses, so no statistic of private records is released outside the silos' DP
   guarantee, and the accuracy is a function of the DP-trained global model and public records
   only. Without an evaluation source no accuracy is measured;
4. the global model is written as ``round-NNN.model`` in ``output-dir``, an AES-256-GCM
   artifact (:mod:`securemodel.crypto.artifacts`, kind ``model``) under the round's data key,
   bound to the round's uid (``round-uid``) and NNN
   (:func:`securemodel.workers.arguments.round_binding`), and :data:`.contract.RESULT_FILE` is
   rewritten. A reader that expects the final model (uid and ``spec.rounds``) refuses an earlier
   round's file of the same run and any other round's file, whatever a results ConfigMap says.

The starting model is read only if it authenticates under ``initial-round-uid`` and
``initial-round`` (the previous round's uid and final round number, or this round's uid and 0
for the fresh model its aggregator wrote); any other file fails the run before a silo is asked
to train.

A round that cannot finish (too few silos online, too few survivors to unmask or to reach
``min-clients``) writes a ``Failed`` result naming the silos that dropped and why, and raises
:class:`RoundFailedError`, which fails the Flower run.

The global model keeps the starting model's input standardization: every silo applies it to its
raw features, so the served model takes raw features like any SecureModel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.common import (
    FitRes,
    Metrics,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server import (
    Grid,
    LegacyContext,
    ServerApp,
    ServerConfig,
    SimpleClientManager,
)
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

from securemodel.crypto.artifacts import read_artifact, read_data_key, write_artifact
from securemodel.models import ARTIFACT_KIND, ModelPredictor, ModelRecord, dump_fp32, load_record
from securemodel.workers.arguments import round_binding
from securemodel.workers.federated.contract import (
    RESULT_KIND,
    RunSettings,
    write_result,
)
from securemodel.workers.federated.prompt_grid import PromptGrid

STAGES = ("setup", "share keys", "collect masked vectors", "unmask")


class RoundFailedError(RuntimeError):
    """A round could not produce a global model."""


def model_header(record: ModelRecord) -> str:
    """What a silo needs to rebuild the global model from its weights: JSON for the fit config."""
    standardization = record.standardization
    return json.dumps(
        {
            "model": record.spec.to_json(),
            "inputShape": list(record.input_shape),
            "numClasses": record.num_classes,
            "stateNames": list(record.state),
            "mean": None if standardization is None else standardization.mean.ravel().tolist(),
            "scale": None if standardization is None else standardization.scale.ravel().tolist(),
        }
    )


@dataclass
class RoundOutcome:
    """What one fit round produced."""

    sampled: set[int] = field(default_factory=set)
    submitted: dict[int, Metrics] = field(default_factory=dict)  # node id -> the silo's fit metrics
    dropped: dict[int, str] = field(default_factory=dict)  # node id -> where it stopped answering
    weights: list[np.ndarray] | None = None


class RecordingFedAvg(FedAvg):
    """FedAvg that records the updates it aggregates and refuses fewer than ``min_clients`` of them."""

    def __init__(self, *, min_clients: int, outcome: RoundOutcome, **options: Any) -> None:
        super().__init__(**options)
        self.min_clients = min_clients
        self.outcome = outcome

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """FedAvg's weighted mean, or nothing when fewer than ``min_clients`` updates arrived."""
        self.outcome.submitted = {int(proxy.cid): dict(res.metrics) for proxy, res in results}
        if len(results) < self.min_clients:
            return None, {}
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.outcome.weights = parameters_to_ndarrays(parameters)
        return parameters, metrics


class ObservedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, recording which silos answer each stage; no unmasking below ``min_clients``."""

    def __init__(self, *, min_clients: int, outcome: RoundOutcome, **options: Any) -> None:
        super().__init__(**options)
        self.min_clients = min_clients
        self.outcome = outcome

    def _note(self, stage: str, state: WorkflowState) -> None:
        if not self.outcome.sampled:
            self.outcome.sampled = set(state.sampled_node_ids)
        for node_id in self.outcome.sampled - set(state.active_node_ids):
            self.outcome.dropped.setdefault(node_id, stage)

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().setup_stage(grid, context, state)
        self._note(STAGES[0], state)
        return ok

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().share_keys_stage(grid, context, state)
        self._note(STAGES[1], state)
        return ok

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().collect_masked_vectors_stage(grid, context, state)
        self._note(STAGES[2], state)
        return ok and len(state.active_node_ids) >= self.min_clients

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().unmask_stage(grid, context, state)
        self._note(STAGES[3], state)
        return ok


def _legacy_context(
    context: Context,
    grid: Grid,
    nodes: set[int],
    strategy: FedAvg,
    rnd: int,
    weights: list[np.ndarray],
) -> LegacyContext:
    manager = SimpleClientManager()
    for node_id in sorted(nodes):
        manager.register(GridClientProxy(node_id, grid, context.run_id))
    legacy = LegacyContext(context, ServerConfig(num_rounds=rnd), strategy, manager)
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(weights), keep_input=True
    )
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd})
    return legacy


def fit_round(
    grid: Grid,
    context: Context,
    settings: RunSettings,
    rnd: int,
    nodes: set[int],
    weights: list[np.ndarray],
    header: str,
) -> RoundOutcome:
    """One FedAvg fit over ``nodes``; under SecAgg+ when the run asks for it."""
    outcome = RoundOutcome(sampled=set() if settings.secure_aggregation else set(nodes))
    strategy = RecordingFedAvg(
        min_clients=settings.min_clients,
        outcome=outcome,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=len(nodes),
        min_available_clients=len(nodes),
        on_fit_config_fn=lambda r: {"round": r, "model": header},
    )
    legacy = _legacy_context(context, grid, nodes, strategy, rnd, weights)
    if settings.secure_aggregation:
        ObservedSecAggPlus(
            min_clients=settings.min_clients,
            outcome=outcome,
            num_shares=settings.num_shares or 1.0,  # 1.0: every sampled silo holds a share
            reconstruction_threshold=settings.threshold,
            max_weight=float(settings.max_weight),
            timeout=settings.stage_timeout,
        )(grid, legacy)
    else:
        default_fit_workflow(grid, legacy)
        for node_id in nodes - set(outcome.submitted):
            outcome.dropped[node_id] = "fit"
    return outcome


@dataclass(frozen=True)
class PublicEvaluation:
    """All of the round's public evaluation source, as a client of the served model sends it."""

    source: str
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def load(cls, settings: RunSettings) -> PublicEvaluation | None:
        """The run's ``evaluation-source`` (None without one), refused if it may hold any silo's records.

        Raises:
            DataLoadError: the source is not kept apart from every silo's source, or cannot be read.
        """
        if not settings.evaluation_source:
            return None
        from securemodel.data.loading import DataLoadError, load_evaluation
        from securemodel.data.sources import SourceError, check_evaluation
        from securemodel.data.tables import TableSchema

        try:
            for source in settings.silo_sources:
                check_evaluation(source, settings.evaluation_source)
        except SourceError as err:
            raise DataLoadError(str(err)) from None
        x, y = load_evaluation(
            settings.evaluation_source,
            training=settings.silo_sources[0],
            data_root=settings.evaluation_root,
            samples=settings.evaluation_samples or None,
            schema=TableSchema.from_spec(json.loads(settings.data_schema)) if settings.data_schema else None,
        )
        return cls(settings.evaluation_source, x, y)

    def accuracy(self, record: ModelRecord) -> float | None:
        """Accuracy of ``record`` (its own input map applied, as serving does) on all of the public source."""
        return ModelPredictor(record, "global").accuracy(self.x, self.y)


def wait_for_silos(grid: Grid, settings: RunSettings) -> set[int]:
    """The registered silos online now, waiting up to ``stage_timeout`` for all of them."""
    deadline = time.monotonic() + settings.stage_timeout
    while True:
        online = set(grid.get_node_ids()) & set(settings.silos)
        if online == set(settings.silos) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if len(online) < settings.min_clients:
        missing = ", ".join(sorted(settings.silos[n] for n in set(settings.silos) - online))
        raise RoundFailedError(
            f"only {len(online)} of {len(settings.silos)} silos are online after {settings.stage_timeout:.0f}s "
            f"(not connected: {missing}); min-clients is {settings.min_clients}"
        )
    return online


def failure_message(rnd: int, settings: RunSettings, outcome: RoundOutcome) -> str:
    """Who dropped, where, and which requirement the survivors miss."""
    names = settings.silos
    dropped = "; ".join(f"{names[n]} (no answer in stage '{stage}')" for n, stage in sorted(outcome.dropped.items()))
    survivors = len(outcome.sampled) - len(outcome.dropped)
    needs = [f"min-clients is {settings.min_clients}"]
    if settings.secure_aggregation:
        needs.insert(0, f"SecAgg+ needs {settings.threshold} survivors to unmask the sum")
    return (
        f"round {rnd} failed: {len(outcome.dropped)} of {len(outcome.sampled)} silos dropped: {dropped or 'none'}; "
        f"{survivors} remain, but {' and '.join(needs)}"
    )


def run_federation(grid: Grid, context: Context, settings: RunSettings) -> dict[str, Any]:
    """Run every round; returns the final result (also written after every round)."""
    key = read_data_key(settings.key_file)
    payload = read_artifact(
        settings.initial_model,
        read_data_key(settings.initial_model_key_file),
        kind=ARTIFACT_KIND,
        binding=round_binding(settings.initial_round_uid, settings.initial_round),
    )
    record = load_record(payload)
    names = list(record.state)
    weights = [np.asarray(record.state[name], dtype=np.float32) for name in names]
    header = model_header(record)
    result: dict[str, Any] = {
        "kind": RESULT_KIND,
        "status": "Running",
        "rounds": settings.rounds,
        "roundsCompleted": 0,
        "secureAggregation": settings.secure_aggregation,
        "history": [],
        "silos": {name: {"roundsSubmitted": 0, "steps": 0} for name in settings.silos.values()},
    }
    write_result(settings.output_dir, result)
    try:
        # Before any silo trains: a source that may hold a silo's records fails the run here.
        evaluation = PublicEvaluation.load(settings)
        if evaluation is not None:
            result.update(evaluationSource=evaluation.source, evaluationExamples=len(evaluation.y))
        for rnd in range(1, settings.rounds + 1):
            nodes = wait_for_silos(grid, settings)
            started = time.monotonic()
            outcome = fit_round(grid, context, settings, rnd, nodes, weights, header)
            for node_id in set(settings.silos) - nodes:
                outcome.dropped.setdefault(node_id, "not online")
            if outcome.weights is None:
                raise RoundFailedError(failure_message(rnd, settings, outcome))
            weights = [w.astype(np.float32) for w in outcome.weights]
            fit_seconds = time.monotonic() - started
            submitted = sorted(settings.silos[n] for n in outcome.submitted)
            record = replace(record, state=dict(zip(names, weights, strict=True)), encoding="fp32")
            measured = {} if evaluation is None else {"accuracy": evaluation.accuracy(record)}
            record = record.with_info(
                federated={"round": rnd, "rounds": settings.rounds, "submitted": submitted, **measured}
            )
            artifact = settings.output_dir / f"round-{rnd:03d}.model"
            binding = round_binding(settings.round_uid, rnd)
            digest = write_artifact(artifact, dump_fp32(record), key, kind=ARTIFACT_KIND, binding=binding)
            for node_id, metrics in outcome.submitted.items():
                silo = result["silos"][settings.silos[node_id]]
                silo["roundsSubmitted"] += 1
                silo["steps"] += int(metrics.get("steps", 0))
            result["history"].append(
                {
                    "round": rnd,
                    "submitted": submitted,
                    "dropped": sorted(settings.silos[n] for n in outcome.dropped),
                    **measured,
                    "digest": digest,
                    "fitSeconds": round(fit_seconds, 3),
                    "seconds": round(time.monotonic() - started, 3),
                }
            )
            result.update(
                roundsCompleted=rnd,
                **measured,
                digest=digest,
                artifact=str(artifact),
            )
            write_result(settings.output_dir, result)
    except Exception as err:
        result.update(status="Failed", error=f"{type(err).__name__}: {err}")
        write_result(settings.output_dir, result)
        raise
    result["status"] = "Succeeded"
    write_result(settings.output_dir, result)
    return result


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry: parse the run configuration and run every round, collecting replies promptly."""
    run_federation(PromptGrid(grid), context, RunSettings.from_config(context.run_config))
