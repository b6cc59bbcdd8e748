"""Lesion network mapping: the lesion arm of shardmap, in three wings.

The first level, here, in the order data flow through it: ``sheets`` (the lesion and
subject sheets) -> ``nifti`` (images and the brain mask) -> ``lesions`` (lesions onto
the mask grid, QC) and ``connectome`` (runs checked and prepared into subject shards) ->
``mapping`` (one lesion batch x one shard, with the CPU or GPU kernel of ``kernels``) ->
``stats`` (mergeable sums) -> ``maps`` (per-lesion and group maps; with
``residual_maps``, a lesion's maps with the degree map regressed out). ``map_names``
names every map the arm writes, ``demo`` makes the embedded demo's data, ``resources``
the cluster requests of the first level's tasks.

Two wings build on it and it imports neither: ``group`` (the specificity test of cases
against control lesions) and ``hubs`` (the degree map, the hub-bias table and the
random-lesion null). The group level does not import the hub controls either.

Importing the package is cheap: ``sheets`` and the ``resources`` modules run inside the
Snakemake process while the job graph is built, so they use the standard library only.
"""
