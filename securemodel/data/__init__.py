"""Training data: where it comes from and how big it is (:mod:`.sources`, pure, no data needed).

The operator sizes a run from :mod:`.sources` alone; the worker reads the data with
:mod:`.loading` (its own module), following the same shard and validation rules.
"""
