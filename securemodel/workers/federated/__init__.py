"""Federated training on Flower's deployment engine: FedAvg under SecAgg+ with per-silo DP-SGD.

Who runs what (see docs/federated.md for the pods, ports and files):

- the aggregator pod runs ``securemodel-worker fl-aggregate`` (:mod:`.aggregate`): a guarded
  ``flower-superlink`` (:mod:`.superlink`) with TLS and SuperNode authentication, registers the
  silos' public keys, submits the run whose ServerApp (:mod:`.server_app`) does FedAvg under
  Flower's ``SecAggPlusWorkflow``, and reports the result (:mod:`.contract`);
- each silo pod runs ``securemodel-worker fl-client`` (:mod:`.supernode`): a ``flower-supernode``
  whose ClientApp (:mod:`.client_app`) trains with the project's DP-SGD under ``secaggplus_mod``
  at the noise, sample rate and steps its own node configuration fixes.

The secure-aggregation protocol, transport, TLS and node authentication are Flower's; nothing
here implements a protocol step.
"""
