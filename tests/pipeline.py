"""Drive the shardmap library the way the workflow does, without Snakemake (for tests)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths
from shardmap.lnm.hubs.degree import DegreeSums, degree_sums_path
from shardmap.lnm.lesions import prepare_lesion_batch_files
from shardmap.lnm.maps import write_batch_lesion_map_files
from shardmap.lnm.mapping import map_batch_files
from shardmap.lnm.sheets import chunks
from shardmap.lnm.stats import merge_files


def prepare_shards(dataset, outdir, subject_shard_size=2, dtype="float32"):
    """Prepare the connectome in shards with their degree sums, as rule lnm_prepare_connectome
    does; returns their paths (the shard's, and "degree")."""
    shards = []
    for index, subjects in enumerate(chunks(dataset["subjects"], subject_shard_size)):
        prefix = Path(outdir) / f"shard-{index}"
        paths = shard_paths(prefix)
        degree = DegreeSums()
        prepare_shard_files(dataset["mask"], subjects, paths["data"], paths["norms"], paths["info"], dtype,
                            on_subject=degree.add_subject)
        paths["degree"] = degree_sums_path(prefix)
        degree.save(paths["degree"])
        shards.append(paths)
    return shards


def map_and_merge(batch_path, shards, outdir, name, device="cpu", threads=1):
    """Map one prepared lesion batch over every shard and merge; returns (npy, json) of the sums."""
    outdir = Path(outdir)
    parts = []
    for s, shard in enumerate(shards):
        part = (str(outdir / f"part-{name}-{s}.npy"), str(outdir / f"part-{name}-{s}.json"))
        map_batch_files(batch_path, shard, *part, device=device, threads=threads)
        parts.append(part)
    merged = (str(outdir / f"merged-{name}.npy"), str(outdir / f"merged-{name}.json"))
    merge_files(parts, *merged)
    return merged


def run_library(dataset, outdir, lesion_batch_size=2, subject_shard_size=2, dtype="float32", device="cpu",
                threads=1, lesion_rules=None):
    """Run prepare -> map -> merge -> maps; return {lesion_id: {map name: 3D array}}.
    ``lesion_rules``: the lnm config keys lesion_values, lesion_threshold, ... (defaults
    otherwise)."""
    outdir = Path(outdir)
    shards = prepare_shards(dataset, outdir, subject_shard_size, dtype)
    maps = {}
    for b, lesions in enumerate(chunks(dataset["lesions"], lesion_batch_size)):
        batch = outdir / f"batch-{b}.npz"
        prepare_lesion_batch_files(dataset["mask"], lesions, batch, outdir / f"batch-{b}.qc.tsv", lesion_rules)
        merged = map_and_merge(batch, shards, outdir, str(b), device, threads)
        files = {(lesion_id, name): str(outdir / f"{lesion_id}_{name}.nii.gz")
                 for lesion_id, _, _ in lesions for name in ("AvgR", "AvgR_Fz", "T")}
        write_batch_lesion_map_files(*merged, [lesion_id for lesion_id, _, _ in lesions], dataset["mask"], files)
        for (lesion_id, name), path in files.items():
            maps.setdefault(lesion_id, {})[name] = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    return maps
