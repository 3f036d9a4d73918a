"""The kopf operator: handlers per kind, pure decisions beside them, settings in :mod:`.settings`.

* Handlers: :mod:`.privacy_budget`, :mod:`.secure_model` (budget stage), :mod:`.pipeline` (train,
  compress, serve, certificates), :mod:`.federated_round`.
* Children of a SecureModel (pure builders): :mod:`.children` (Jobs, Deployment, Service, PVC),
  :mod:`.keys` (data key, CA and certificate Secrets), and :mod:`.pipeline_status` (status from them).
* Pure decisions (no Kubernetes): :mod:`.budget_status`, :mod:`.claim_status`, :mod:`.status`,
  and the training plan in :mod:`.calibration`.
* The ledger in the API server: :mod:`.ledger` (optimistic-concurrency transactions, and
  ``commit_claim`` for the training stage), batched per budget by :mod:`.writer`.
* Shared per process: :mod:`.runtime` (API client, writer, :mod:`.wakeups`, calibrator).
"""
