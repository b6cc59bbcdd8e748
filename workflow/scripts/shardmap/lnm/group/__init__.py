"""The group level of a study: cases against control lesions, voxel by voxel.

``design`` (which lesions are cases and controls, the covariates; checked while the job
graph is built) -> ``design_maps`` (each lesion's map: from this run's first level, or
from a sheet of maps made elsewhere) -> ``glm`` (the Freedman-Lane t statistic) ->
``permutations`` (tasks over permutation ranges and voxel chunks that merge exactly) and
``tfce`` -> ``specificity`` (the prepare and merge tasks: p maps, FWE, the conjunction
with the cases' sensitivity map). ``resources``: the tasks' cluster requests.

The group level builds on the first level (``shardmap.lnm``) and never on the hub
controls (``shardmap.lnm.hubs``); the maps with the degree regressed out that it can
test come from the first level's ``residual_maps``.
"""
