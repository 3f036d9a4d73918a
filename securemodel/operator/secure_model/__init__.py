"""SecureModel: one level-based reconciler, observe → decide → act.

* :mod:`.spec`: the spec parsed once into typed values, and the versions it hashes to.
* :mod:`.observe`: the snapshot (spec, ledger, calibration, children from kopf's indexes).
* :mod:`.decide`: the pure decision, built from :mod:`.settlement` (the rule that ends a
  claim), :mod:`.jobs` (what the kubelet says of a Job's pods), :mod:`.children` and
  :mod:`.keys` (the objects the model owns) and :mod:`.outcomes` (its status).
* :mod:`.act`: the decision carried out; :mod:`.handlers`: the kopf handlers.
"""
