"""The kopf operator: one subpackage per kind, each with its handlers beside pure decisions.

* :mod:`.budget`: PrivacyBudget (ledger transactions and their batching, status, handlers).
* :mod:`.secure_model`: SecureModel (observe → decide → act).
* :mod:`.federated`: FederatedRound.
* Shared: :mod:`.kube` (server-side apply and exact writes), :mod:`.conditions` (status,
  conditions and Events of a decided outcome), :mod:`.runtime` (API client, ledger writer,
  wake-ups, calibrator per process), :mod:`.wakeups`, :mod:`.leader` (Lease leader election),
  :mod:`.settings`, and :mod:`.main` (the ``securemodel-operator`` command).
"""
