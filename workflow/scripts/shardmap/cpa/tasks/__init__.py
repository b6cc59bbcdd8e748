"""The perturbation arm's workflow tasks, one module per rule: ``check_inputs``,
``train``, ``infer`` (one shard of rows), ``merge`` (the shards into latents.h5ad),
``predict`` (a counterfactual) and ``evaluate`` (the held-out conditions).

Every task that touches cells reads only its rows (``h5ad_rows``) and writes into
arrays preallocated for its output; files appear under their final names only when
complete.
"""
