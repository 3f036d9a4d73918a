"""SecureModel handlers, stage two: train, compress, serve; settle the claim; keep certificates fresh.

One kopf daemon per model whose claim is granted (:func:`pipeline_stage`) drives the rest
of its life, level-based: each pass creates what is missing of the model's children
(:mod:`.children`, :mod:`.keys`) under deterministic names, reads the children's status,
settles the claim once training is over, and writes the model's status
(:mod:`.pipeline_status`). A restarted operator resumes from what the API server holds:
a Job that exists is never created again (names are deterministic, and creation is
refused with 409), and the claim is committed idempotently.

Watching children: :func:`wake_owner` wakes a model's daemon on every watch event of a Job
or Deployment carrying the model's uid label; besides that the daemon re-reads its
children every :data:`PIPELINE_RESYNC_SECONDS` while it progresses (pod crashes do not
change a Deployment) and every :data:`PIPELINE_IDLE_RESYNC_SECONDS` once it serves.

Versions: the Jobs of a model are named after the version of its spec
(:func:`.children.version_of`). The claim is keyed per model uid, so one model trains one
version: a later change of model, data, training, privacy or compression keeps the trained
version serving and says so in the ``Trained`` condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND, Phase
from securemodel.operator import children, keys
from securemodel.operator import pipeline_status as ps
from securemodel.operator.claim_status import BUDGET_RESERVED, budget_condition
from securemodel.operator.ledger import BudgetNotFound, BudgetRef, _read, committing, releasing
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.secure_model import _publish, _sleep, model_key
from securemodel.operator.settings import (
    ARTIFACTS_STORAGE,
    CERTIFICATE_CHECK_SECONDS,
    DAEMON_CANCELLATION_BACKOFF,
    DAEMON_CANCELLATION_TIMEOUT,
    PIPELINE_IDLE_RESYNC_SECONDS,
    PIPELINE_RESYNC_SECONDS,
    RETRY_BACKOFF,
    WORKER_IMAGE,
)
from securemodel.operator.status import READY, Condition, Outcome
from securemodel.privacy import Claim, ClaimState, Ledger, LedgerError

SPEC_HASH = f"{GROUP}/spec-hash"


def in_pipeline(status: Mapping[str, Any]) -> bool:
    """Whether the model's claim is granted (Reserved) or spent (Committed): stage two runs."""
    condition = budget_condition(status)
    return condition is not None and (
        (condition.get("status") == "True" and condition.get("reason") in (ClaimState.RESERVED, ps.COMMITTED))
    )


@kopf.on.event("batch", "v1", "jobs", labels={children.UID_LABEL: kopf.PRESENT})
@kopf.on.event("apps", "v1", "deployments", labels={children.UID_LABEL: kopf.PRESENT})
async def wake_owner(labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    """Wake the daemon of the model that owns this child (async: it runs on the daemons' loop)."""
    runtime(memo).wakeups.notify(model_key(labels[children.UID_LABEL]))


@kopf.daemon(
    GROUP,
    VERSION,
    KIND.plural,
    when=lambda status, **_: in_pipeline(status),
    backoff=RETRY_BACKOFF,
    cancellation_backoff=DAEMON_CANCELLATION_BACKOFF,
    cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT,
)
async def pipeline_stage(body: kopf.Body, uid: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Train, compress and serve the model; settle its claim; publish its status."""
    current = runtime(memo)
    written: dict[str, Any] = {}
    while not stopped:
        with current.wakeups.listen(model_key(uid)) as changed:
            if body["metadata"].get("deletionTimestamp"):
                return  # release_claim settles the claim; the garbage collector removes the children
            outcome = await Pass(current, body).run(stopped)
            written = await _publish(current, body, outcome, written)
            idle = outcome.phase in (Phase.SERVING, Phase.FAILED) and outcome.ready.reason != "ServingFailed"
            await _sleep(changed, stopped, PIPELINE_IDLE_RESYNC_SECONDS if idle else PIPELINE_RESYNC_SECONDS)


@kopf.timer(
    GROUP,
    VERSION,
    KIND.plural,
    interval=CERTIFICATE_CHECK_SECONDS,
    initial_delay=CERTIFICATE_CHECK_SECONDS,
    when=lambda status, **_: in_pipeline(status),
    backoff=RETRY_BACKOFF,
)
async def renew_certificates(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-issue certificates due for renewal (and create any missing key Secret)."""
    if body["metadata"].get("deletionTimestamp"):
        return
    await ensure_keys(runtime(memo), body)


async def ensure_keys(current: Runtime, body: Mapping[str, Any], *, force_renewal: bool = False) -> None:
    """Create or replace the model's key Secrets as :func:`.keys.wanted_secrets` says; delete removed clients'."""
    owner = children.Owner.of(body)
    core = kubernetes.client.CoreV1Api(current.client)
    listed = await asyncio.to_thread(core.list_namespaced_secret, owner.namespace, label_selector=children.selector(owner))
    stored = [current.client.sanitize_for_serialization(item) for item in listed.items]
    by_name = {item["metadata"]["name"]: item for item in stored}
    rotation = (body["metadata"].get("annotations") or {}).get(keys.ROTATE_ANNOTATION)
    now = datetime.now(UTC)
    writes = keys.wanted_secrets(owner, body["spec"], by_name, now, force_renewal=force_renewal, rotation=rotation)
    for write in writes:
        name = write.body["metadata"]["name"]
        if write.replace:
            await asyncio.to_thread(core.replace_namespaced_secret, name, owner.namespace, write.body)
        else:
            await _create(core.create_namespaced_secret, owner.namespace, write.body)
    for name in keys.removed_clients(owner, body["spec"], stored):
        with contextlib.suppress(kubernetes.client.ApiException):
            await asyncio.to_thread(core.delete_namespaced_secret, name, owner.namespace)


async def _create(create: Any, namespace: str, obj: Mapping[str, Any]) -> bool:
    """Create ``obj``; False if it already exists (another pass or a previous operator created it)."""
    try:
        await asyncio.to_thread(create, namespace, obj)
    except kubernetes.client.ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def _serialize(current: Runtime, obj: Any) -> dict[str, Any]:
    return current.client.sanitize_for_serialization(obj)


class Pass:
    """One level-based pass of stage two over one model."""

    def __init__(self, current: Runtime, body: Mapping[str, Any]) -> None:
        self.current = current
        self.body = body
        self.spec = body["spec"]
        self.status = body.get("status") or {}
        self.owner = children.Owner.of(body)
        self.ref = BudgetRef(self.owner.namespace, self.spec["privacy"]["budgetRef"])
        self.core = kubernetes.client.CoreV1Api(current.client)
        self.batch = kubernetes.client.BatchV1Api(current.client)
        self.apps = kubernetes.client.AppsV1Api(current.client)
        self.image = children.worker_image(self.spec, WORKER_IMAGE)

    async def run(self, stopped: kopf.DaemonStopped) -> Outcome:
        await ensure_keys(self.current, self.body)
        await _create(self.core.create_namespaced_persistent_volume_claim, self.owner.namespace,
                      children.artifacts_pvc(self.owner, ARTIFACTS_STORAGE))  # fmt: skip
        wanted = children.version_of(self.spec)
        trains = await self._jobs("train")
        version = next(iter(sorted(trains)), wanted) if wanted not in trains else wanted
        note = "" if version == wanted else (
            f"; the spec changed since version {version} was trained, and training a new version under a new "
            "claim is not supported yet: version " + version + " keeps serving"
        )
        privacy = dict(self.status.get("privacy") or {})
        train_name = children.train_job_name(self.owner.name, version)
        job = trains.get(version)
        if job is None:
            return await self._start_training(version, stopped)
        train = ps.job_state(job, await self._pods(f"job-name={train_name}"), "train", "TrainResult")
        if train.phase in (ps.JobPhase.PENDING, ps.JobPhase.RUNNING):
            return ps.training(train, train_name)
        settled, privacy = await self._settle(train, privacy)
        if train.phase is ps.JobPhase.FAILED or train.result is None or train.result.get("status") != "Succeeded":
            return ps.training_failed(train, train_name, settled, privacy)
        result = train.result
        fields = ps.trained_fields(result, privacy.get("epsilonSpent", 0.0), privacy["delta"], privacy["accountant"])
        fields["privacy"] = {**privacy, **fields["privacy"]}
        fields["endpoint"] = children.endpoint(self.owner.name, self.owner.namespace)
        trained = ps.trained_condition(result, fields["privacy"]["epsilonSpent"])
        if note:
            trained = Condition(trained.type, trained.status, "NewVersionNotTrained", trained.message + note)
        conditions = (settled, trained)

        compress_name = children.compress_job_name(self.owner.name, version)
        compress_job = (await self._jobs("compress")).get(version)
        if compress_job is None:
            await _create(self.batch.create_namespaced_job, self.owner.namespace,
                          children.compress_job(self.owner, self.spec, version, self.image))  # fmt: skip
            return _with(ps.compressing(ps.JobState(ps.JobPhase.PENDING, None, False), compress_name), conditions, fields)
        compress = ps.job_state(compress_job, await self._pods(f"job-name={compress_name}"), "compress", "CompressResult")
        if compress.phase in (ps.JobPhase.PENDING, ps.JobPhase.RUNNING):
            return _with(ps.compressing(compress, compress_name), conditions, fields)
        if compress.phase is ps.JobPhase.FAILED or (compress.result or {}).get("status") != "Succeeded":
            return _with(ps.compression_failed(compress, compress_name), conditions, fields)
        assert compress.result is not None
        fields["model"] = {**fields["model"], **ps.compressed_fields(compress.result)["model"]}
        conditions = (*conditions, ps.compressed_condition(compress.result))

        deployment = await self._ensure_serving(version)
        replicas = int((self.spec.get("serving") or {}).get("replicas", 1))
        failure = ps.serve_failure(await self._pods(children.selector(self.owner, "serve")))
        return _with(ps.serving(deployment, replicas, failure), conditions, fields)

    async def _jobs(self, component: str) -> dict[str, dict[str, Any]]:
        """The model's Jobs of ``component`` by version."""
        listed = await asyncio.to_thread(
            self.batch.list_namespaced_job, self.owner.namespace, label_selector=children.selector(self.owner, component)
        )
        jobs = [_serialize(self.current, item) for item in listed.items]
        return {job["metadata"]["labels"].get(children.VERSION_LABEL, ""): job for job in jobs}

    async def _pods(self, selector: str) -> list[dict[str, Any]]:
        listed = await asyncio.to_thread(self.core.list_namespaced_pod, self.owner.namespace, label_selector=selector)
        return [_serialize(self.current, item) for item in listed.items]

    async def _fresh_claim(self) -> Claim | None:
        api = self.current.custom
        try:
            budget = await asyncio.to_thread(_read, api, self.ref)
        except BudgetNotFound:
            return None
        return Ledger.from_status(budget.get("status")).claim(self.owner.uid)

    async def _start_training(self, version: str, stopped: kopf.DaemonStopped) -> Outcome:
        """Create the train Job, only if the claim is Reserved in the ledger as stored right now."""
        claim = await self._fresh_claim()
        privacy = self.status.get("privacy") or {}
        name = children.train_job_name(self.owner.name, version)
        if claim is None or claim.state is not ClaimState.RESERVED:
            state = claim.state if claim else "missing"
            message = f"no train Job created: the claim on {self.ref} is {state}, not Reserved"
            return Outcome(Phase.FAILED, Condition(READY, False, "ClaimNotReserved", message),
                           (Condition(ps.TRAINED, False, "ClaimNotReserved", message),), warning=True)  # fmt: skip
        if stopped or self.body["metadata"].get("deletionTimestamp"):
            return ps.training(ps.JobState(ps.JobPhase.PENDING, None, False), name)
        run = children.Run(float(privacy["noiseMultiplier"]), float(privacy["sampleRate"]), int(privacy["steps"]))
        job = children.train_job(self.owner, self.spec, version, run, self.image)
        await _create(self.batch.create_namespaced_job, self.owner.namespace, job)
        kopf.event(self.body, type="Normal", reason="TrainingStarted", message=f"Job {name} created")
        return ps.training(ps.JobState(ps.JobPhase.PENDING, None, False), name)

    async def _settle(self, train: ps.JobState, privacy: dict[str, Any]) -> tuple[Condition, dict[str, Any]]:
        """Commit (or release) the claim for the finished training; return the BudgetReserved condition and privacy."""
        claim = await self._fresh_claim()
        budget = self.ref.name
        if claim is None:
            return Condition(BUDGET_RESERVED, False, "BudgetNotFound", f"PrivacyBudget {budget} is gone"), privacy
        delta, accountant = claim.delta, privacy.get("accountant") or self.spec["privacy"].get("accountant", "prv")
        decision = ps.settlement(train, claim.epsilon, delta, accountant)
        if claim.state is ClaimState.RESERVED:
            if decision.commit:
                change = committing(self.owner.uid, decision.epsilon)
            else:
                change = releasing(self.owner.uid, pod_started=decision.data_touched)
            try:
                ledger = await self.current.writer.apply(self.ref, change)
                claim = ledger.claim(self.owner.uid) or claim
            except LedgerError:
                claim = await self._fresh_claim() or claim
        privacy = {**privacy, "delta": delta, "accountant": accountant}
        if claim.state is ClaimState.COMMITTED:
            spent = claim.epsilon  # a Committed claim holds what was spent
            privacy["epsilonSpent"] = spent
            return ps.committed_condition(budget, spent), privacy
        message = f"the claim on PrivacyBudget {budget} is {claim.state}: the training never touched the data"
        return Condition(BUDGET_RESERVED, False, str(claim.state), message), privacy

    async def _ensure_serving(self, version: str) -> dict[str, Any]:
        """Create or update the Service and the Deployment of ``version``; return the Deployment as stored."""
        await _create(self.core.create_namespaced_service, self.owner.namespace, children.service(self.owner))
        desired = children.deployment(self.owner, self.spec, version, self.image)
        digest = hashlib.sha256(json.dumps(desired["spec"], sort_keys=True).encode()).hexdigest()[:16]
        desired["metadata"].setdefault("annotations", {})[SPEC_HASH] = digest
        name = self.owner.name
        try:
            stored = await asyncio.to_thread(self.apps.read_namespaced_deployment, name, self.owner.namespace)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            await _create(self.apps.create_namespaced_deployment, self.owner.namespace, desired)
            stored = await asyncio.to_thread(self.apps.read_namespaced_deployment, name, self.owner.namespace)
        deployment = _serialize(self.current, stored)
        if (deployment["metadata"].get("annotations") or {}).get(SPEC_HASH) != digest:
            patched = await asyncio.to_thread(
                self.apps.patch_namespaced_deployment, name, self.owner.namespace,
                {"metadata": {"annotations": {SPEC_HASH: digest}, "labels": desired["metadata"]["labels"]},
                 "spec": desired["spec"]},
            )  # fmt: skip
            deployment = _serialize(self.current, patched)
        return deployment


def _with(outcome: Outcome, conditions: tuple[Condition, ...], fields: Mapping[str, Any]) -> Outcome:
    """``outcome`` with the conditions and fields of the stages already done."""
    merged = {**fields, **outcome.fields}
    return Outcome(outcome.phase, outcome.ready, (*conditions, *outcome.conditions), merged, outcome.warning)


async def settle_on_delete(current: Runtime, body: Mapping[str, Any], ref: BudgetRef) -> None:
    """Settle the claim of a model being deleted: commit if a train pod may have touched the data, else release.

    A training still running is charged its whole claim (it may run every step); one that
    finished is charged the ε of the steps it ran.
    """
    owner = children.Owner.of(body)
    batch = kubernetes.client.BatchV1Api(current.client)
    core = kubernetes.client.CoreV1Api(current.client)
    listed = await asyncio.to_thread(
        batch.list_namespaced_job, owner.namespace, label_selector=children.selector(owner, "train")
    )
    state: ps.JobState | None = None
    for job in listed.items:
        job_dict = _serialize(current, job)
        pods = await asyncio.to_thread(
            core.list_namespaced_pod, owner.namespace, label_selector=f"job-name={job_dict['metadata']['name']}"
        )
        found = ps.job_state(job_dict, [_serialize(current, p) for p in pods.items], "train", "TrainResult")
        if state is None or found.started:
            state = found
    try:
        budget = await asyncio.to_thread(_read, current.custom, ref)
    except BudgetNotFound:
        return
    claim = Ledger.from_status(budget.get("status")).claim(owner.uid)
    if claim is None or claim.state not in (ClaimState.RESERVED, ClaimState.WAITING):
        return
    if claim.state is ClaimState.RESERVED and state is not None and state.started:
        accountant = body["spec"]["privacy"].get("accountant", "prv")
        if state.phase in (ps.JobPhase.SUCCEEDED, ps.JobPhase.FAILED):
            decision = ps.settlement(state, claim.epsilon, claim.delta, accountant)
        else:
            decision = ps.Settlement(True, claim.epsilon, True)
        if decision.commit:
            await current.writer.apply(ref, committing(owner.uid, decision.epsilon))
            return
    await current.writer.apply(ref, releasing(owner.uid, pod_started=state is not None and state.started))
