"""Lesion network mapping: the lesion arm of shardmap, in the order data flow through it.

``sheets`` (the lesion and subject sheets) -> ``nifti`` (images and the brain mask) ->
``lesions`` (lesions onto the mask grid, QC) and ``connectome`` (runs checked and
prepared into subject shards) -> ``mapping`` (one lesion batch x one shard, with the
CPU or GPU kernel of ``kernels``) -> ``stats`` (mergeable sums) -> ``maps`` (per-lesion
and group maps). ``demo`` makes the embedded demo's data; ``resources`` the cluster
requests of every task.

Importing the package is cheap: ``sheets`` and ``resources`` run inside the Snakemake
process while the job graph is built, so they use the standard library only.
"""
