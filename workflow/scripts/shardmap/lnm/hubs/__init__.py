"""The hub controls: how much a study's maps owe to the connectome's hubs.

``degree`` (the connectome's degree map, from sums that the shard preparation adds
subject by subject) -> ``hub_bias`` (each lesion's and group map's spatial correlation
with it, the lesion site's degree) and the random-lesion null: ``null_plan`` (which null
lesions, read while the job graph is built) -> ``null_lesions`` (placed on the mask, then
mapped by the first level's own tasks) -> ``null_maps`` (null groups of the real groups'
sizes, the real sensitivity's percentile among them). ``tables`` writes their TSV tables,
``resources`` the tasks' cluster requests.

The hub controls build on the first level (``shardmap.lnm``); neither the first level
nor the group level (``shardmap.lnm.group``) imports them.
"""
