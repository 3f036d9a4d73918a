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

Versions (:class:`.children.Versions`): one claim and one train Job per training version,
one compress Job per version. A change of model, data, training or privacy sends the model
back to the budget stage (:func:`.pipeline_status.new_version`) to claim for the new
training version, once the claims of the versions it left are settled: a training under
way runs to its end and is committed, a claim with no train Job is released. A change of
compression alone compresses the trained artifact again. Until the new version serves,
the one that serves keeps serving (the Deployment rolls with ``maxUnavailable: 0``) and
Ready stays True (:func:`.claim_status.while_serving`); ``status.servingVersion`` says which.
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
from securemodel.operator.claim_status import BUDGET_NOT_FOUND, BUDGET_RESERVED, budget_condition, while_serving
from securemodel.operator.ledger import BudgetNotFound, BudgetRef, committing, read_budget, releasing
from securemodel.operator.model_status import write_status
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.secure_model import model_key
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
from securemodel.operator.wakeups import sleep_until
from securemodel.privacy import Claim, ClaimState, Consumer, Ledger, LedgerError

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
            written = await write_status(current, body, outcome, written)
            idle = outcome.phase in (Phase.SERVING, Phase.FAILED) and outcome.ready.reason != "ServingFailed"
            await sleep_until(changed, stopped, PIPELINE_IDLE_RESYNC_SECONDS if idle else PIPELINE_RESYNC_SECONDS)


@kopf.timer(
    GROUP,
    VERSION,
    KIND.plural,
    interval=CERTIFICATE_CHECK_SECONDS,
    initial_delay=CERTIFICATE_CHECK_SECONDS,
    when=lambda status, **_: in_pipeline(status) or bool(status.get("servingVersion")),
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
        self.versions = children.Versions.of(self.spec)
        self.ref = BudgetRef(self.owner.namespace, self.spec["privacy"]["budgetRef"])
        self.core = kubernetes.client.CoreV1Api(current.client)
        self.batch = kubernetes.client.BatchV1Api(current.client)
        self.apps = kubernetes.client.AppsV1Api(current.client)
        self.image = children.worker_image(self.spec, WORKER_IMAGE)

    async def run(self, stopped: kopf.DaemonStopped) -> Outcome:
        await ensure_keys(self.current, self.body)
        await _create(self.core.create_namespaced_persistent_volume_claim, self.owner.namespace,
                      children.artifacts_pvc(self.owner, ARTIFACTS_STORAGE))  # fmt: skip
        outcome = await self._advance(stopped)
        outcome = Outcome(outcome.phase, outcome.ready, outcome.conditions,
                          {**outcome.fields, "version": self.versions.version}, outcome.warning)  # fmt: skip
        serving = self.status.get("servingVersion")
        if serving == self.versions.version or outcome.fields.get("servingVersion"):
            return outcome
        return while_serving(outcome, serving, await self._serving_available())

    async def _advance(self, stopped: kopf.DaemonStopped) -> Outcome:
        ledger = await self._fresh_ledger()
        if ledger is None:
            message = f"PrivacyBudget {self.ref.name} is gone"
            return Outcome(Phase.FAILED, Condition(READY, False, BUDGET_NOT_FOUND, message),
                           (Condition(BUDGET_RESERVED, False, BUDGET_NOT_FOUND, message),), warning=True)  # fmt: skip
        trains = await self._jobs("train")
        left = await self._settle_left_versions(ledger, trains)
        if left is not None:
            return left
        training = self.versions.training
        consumer = Consumer(KIND.kind, self.owner.namespace, self.owner.name, self.owner.uid, training)
        claim = ledger.claim(consumer.key)
        if claim is None or claim.state not in (ClaimState.RESERVED, ClaimState.COMMITTED):
            return ps.new_version(self.ref.name, training)
        train_name = children.train_job_name(self.owner.name, training)
        job = trains.get(training)
        if job is None:
            return await self._start_training(claim, stopped)
        train = ps.job_state(job, await self._pods(f"job-name={train_name}"), "train", "TrainResult")
        if train.phase in (ps.JobPhase.PENDING, ps.JobPhase.RUNNING):
            return ps.training(train, train_name)
        settled, privacy = await self._settle(train, claim)
        if train.phase is ps.JobPhase.FAILED or train.result is None or train.result.get("status") != "Succeeded":
            return ps.training_failed(train, train_name, settled, privacy)
        result = train.result
        fields = ps.trained_fields(result, privacy.get("epsilonSpent", 0.0), privacy["delta"], privacy["accountant"])
        fields["privacy"] = {**privacy, **fields["privacy"]}
        fields["endpoint"] = children.endpoint(self.owner.name, self.owner.namespace)
        conditions = (settled, ps.trained_condition(result, fields["privacy"]["epsilonSpent"]))

        compress_name = children.compress_job_name(self.owner.name, self.versions.version)
        compress_job = (await self._jobs("compress")).get(self.versions.version)
        if compress_job is None:
            await _create(self.batch.create_namespaced_job, self.owner.namespace,
                          children.compress_job(self.owner, self.spec, self.versions, self.image))  # fmt: skip
            compress = ps.JobState(ps.JobPhase.PENDING, None, False)
        else:
            pods = await self._pods(f"job-name={compress_name}")
            compress = ps.job_state(compress_job, pods, "compress", "CompressResult")
        if compress.phase in (ps.JobPhase.PENDING, ps.JobPhase.RUNNING):
            return _with(ps.compressing(compress, compress_name), conditions, ps.not_compressed(fields))
        if compress.phase is ps.JobPhase.FAILED or (compress.result or {}).get("status") != "Succeeded":
            return _with(ps.compression_failed(compress, compress_name), conditions, ps.not_compressed(fields))
        assert compress.result is not None
        fields["model"] = {**fields["model"], **ps.compressed_fields(compress.result)["model"]}
        conditions = (*conditions, ps.compressed_condition(compress.result))

        deployment = await self._ensure_serving()
        replicas = int((self.spec.get("serving") or {}).get("replicas", 1))
        serving_pods = f"{children.selector(self.owner, 'serve')},{children.VERSION_LABEL}={self.versions.version}"
        pods = await self._pods(serving_pods)
        outcome = ps.serving(deployment, replicas, ps.serve_failure(pods))
        if outcome.phase is Phase.SERVING:
            fields["servingVersion"] = self.versions.version
        return _with(outcome, conditions, fields)

    async def _settle_left_versions(self, ledger: Ledger, trains: Mapping[str, dict[str, Any]]) -> Outcome | None:
        """Settle the Reserved claims of training versions the spec left; an outcome while one is not settled yet.

        A training whose pod started runs to its end (it may have read the data: its ε is spent
        either way) and is committed. A train Job whose pod never started (an image that cannot
        be pulled, a GPU that is not there) is deleted, and its claim released once the Job is
        gone; a claim whose train Job was never created is released at once. Known window: a
        pod that starts between the read and the deletion is killed within moments, having
        written no artifact, yet its claim is released.
        """
        for claim in ledger.claims_of(self.owner.uid):
            version = claim.consumer.version
            if version == self.versions.training or claim.state is not ClaimState.RESERVED:
                continue
            job = trains.get(version)
            if job is None:
                with contextlib.suppress(LedgerError):
                    await self.current.writer.apply(self.ref, releasing(claim.consumer.key, pod_started=False))
                continue
            name = children.train_job_name(self.owner.name, version)
            state = ps.job_state(job, await self._pods(f"job-name={name}"), "train", "TrainResult")
            if state.phase is ps.JobPhase.PENDING and not state.started:
                with contextlib.suppress(kubernetes.client.ApiException):  # already going
                    await asyncio.to_thread(self.batch.delete_namespaced_job, name, self.owner.namespace,
                                            propagation_policy="Foreground")  # fmt: skip
                return ps.replacing_left_version(name, version)
            if state.phase in (ps.JobPhase.PENDING, ps.JobPhase.RUNNING):
                return ps.finishing_left_version(ps.training(state, name), version)
            await self._commit_finished(state, claim)
        return None

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

    async def _serving_available(self) -> bool:
        """Whether the serving Deployment has an available pod (of whichever version)."""
        try:
            stored = await asyncio.to_thread(self.apps.read_namespaced_deployment, self.owner.name, self.owner.namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return int((stored.status and stored.status.available_replicas) or 0) > 0

    async def _fresh_ledger(self) -> Ledger | None:
        try:
            budget = await asyncio.to_thread(read_budget, self.current.custom, self.ref)
        except BudgetNotFound:
            return None
        return Ledger.from_status(budget.get("status"))

    async def _start_training(self, claim: Claim, stopped: kopf.DaemonStopped) -> Outcome:
        """Create the train Job, only if its claim is Reserved in the ledger as stored right now."""
        privacy = self.status.get("privacy") or {}
        training = self.versions.training
        name = children.train_job_name(self.owner.name, training)
        if claim.state is not ClaimState.RESERVED:
            message = f"no train Job created: the claim on {self.ref} is {claim.state}, not Reserved"
            return Outcome(Phase.FAILED, Condition(READY, False, "ClaimNotReserved", message),
                           (Condition(ps.TRAINED, False, "ClaimNotReserved", message),), warning=True)  # fmt: skip
        if stopped or self.body["metadata"].get("deletionTimestamp"):
            return ps.training(ps.JobState(ps.JobPhase.PENDING, None, False), name)
        run = children.Run(float(privacy["noiseMultiplier"]), float(privacy["sampleRate"]), int(privacy["steps"]))
        job = children.train_job(self.owner, self.spec, training, run, self.image)
        await _create(self.batch.create_namespaced_job, self.owner.namespace, job)
        kopf.event(self.body, type="Normal", reason="TrainingStarted", message=f"Job {name} created")
        return ps.training(ps.JobState(ps.JobPhase.PENDING, None, False), name)

    async def _commit_finished(self, train: ps.JobState, claim: Claim) -> Claim:
        """Commit (or release) the Reserved ``claim`` of a finished training; return it as it is now."""
        if claim.state is not ClaimState.RESERVED:
            return claim
        accountant = self.spec["privacy"].get("accountant", "prv")
        decision = ps.settlement(train, claim.epsilon, claim.delta, accountant)
        key = claim.consumer.key
        if decision.commit:
            change = committing(key, decision.epsilon)
        else:
            change = releasing(key, pod_started=decision.data_touched)
        try:
            ledger = await self.current.writer.apply(self.ref, change)
        except LedgerError:
            ledger = await self._fresh_ledger() or Ledger()
        return ledger.claim(key) or claim

    async def _settle(self, train: ps.JobState, claim: Claim) -> tuple[Condition, dict[str, Any]]:
        """Settle the claim of the finished training; return the BudgetReserved condition and ``status.privacy``."""
        claim = await self._commit_finished(train, claim)
        budget = self.ref.name
        privacy = dict(self.status.get("privacy") or {})
        accountant = privacy.get("accountant") or self.spec["privacy"].get("accountant", "prv")
        privacy = {**privacy, "delta": claim.delta, "accountant": accountant}
        if claim.state is ClaimState.COMMITTED:
            spent = claim.epsilon  # a Committed claim holds what was spent
            privacy["epsilonSpent"] = spent
            return ps.committed_condition(budget, spent), privacy
        message = f"the claim on PrivacyBudget {budget} is {claim.state}: the training never touched the data"
        return Condition(BUDGET_RESERVED, False, str(claim.state), message), privacy

    async def _ensure_serving(self) -> dict[str, Any]:
        """Create or update the Service and the Deployment of the spec's version; return the Deployment as stored."""
        await _create(self.core.create_namespaced_service, self.owner.namespace, children.service(self.owner))
        desired = children.deployment(self.owner, self.spec, self.versions, self.image)
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
    """Settle every live claim of a model being deleted (one per training version it left unsettled).

    A claim whose train pod may have touched the data is committed: a training still running
    with its whole claim (it may run every step), one that finished with the ε of the steps
    it ran. Any other claim is released.
    """
    owner = children.Owner.of(body)
    try:
        budget = await asyncio.to_thread(read_budget, current.custom, ref)
    except BudgetNotFound:
        return
    live = (ClaimState.RESERVED, ClaimState.WAITING)
    claims = [c for c in Ledger.from_status(budget.get("status")).claims_of(owner.uid) if c.state in live]
    if not claims:
        return
    batch = kubernetes.client.BatchV1Api(current.client)
    core = kubernetes.client.CoreV1Api(current.client)
    listed = await asyncio.to_thread(
        batch.list_namespaced_job, owner.namespace, label_selector=children.selector(owner, "train")
    )
    jobs = {job.metadata.labels.get(children.VERSION_LABEL, ""): _serialize(current, job) for job in listed.items}
    accountant = body["spec"]["privacy"].get("accountant", "prv")
    for claim in claims:
        job = jobs.get(claim.consumer.version)
        state: ps.JobState | None = None
        if job is not None:
            pods = await asyncio.to_thread(
                core.list_namespaced_pod, owner.namespace, label_selector=f"job-name={job['metadata']['name']}"
            )
            state = ps.job_state(job, [_serialize(current, p) for p in pods.items], "train", "TrainResult")
        touched = state is not None and state.started
        if claim.state is ClaimState.RESERVED and state is not None and touched:
            if state.phase in (ps.JobPhase.SUCCEEDED, ps.JobPhase.FAILED):
                decision = ps.settlement(state, claim.epsilon, claim.delta, accountant)
            else:
                decision = ps.Settlement(True, claim.epsilon, True)
            if decision.commit:
                await current.writer.apply(ref, committing(claim.consumer.key, decision.epsilon))
                continue
            touched = decision.data_touched
        await current.writer.apply(ref, releasing(claim.consumer.key, pod_started=touched))
