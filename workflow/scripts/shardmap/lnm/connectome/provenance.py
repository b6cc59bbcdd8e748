"""Which connectome made the maps: the provenance sidecar ``{outdir}/lnm/maps/connectome.json``.

It records the connectome's name (lnm.connectome.name; GSP1000's preparations differ,
so the name matters), its format and path, every subject and run used (in shard order),
the mask the maps are on, how the runs were centred, and a content fingerprint: a
SHA-256 over the mask's fingerprint and the CRC-32 of every subject's stored values,
which the shard preparation computes as it writes (so it costs about 1 % of it, and two
runs with the same fingerprint mapped the same numbers). Shards prepared by an earlier
version of shardmap have no checksums: the fingerprint is then null, and
``--forcerun lnm_prepare_connectome`` gives one.
"""

from __future__ import annotations

import hashlib
import json

from ...atomic import atomic_open

CENTRING = {
    "nifti": "each run centred per voxel, the runs of a subject concatenated in time",
    "lacuna": "lacuna stores each subject's first run only, uncentred: it is centred per voxel",
    "connectome_quick": "each file cut into runs of run_frames frames, each centred per voxel, then concatenated",
    "leaddbs": "each run file centred per voxel, the runs of a subject concatenated in time (Lead-DBS "
               "instead averages r across runs)",
}


def content_fingerprint(mask_fingerprint, shard_infos):
    """SHA-256 (32 hex digits) over the mask's fingerprint and each subject's id and CRC-32;
    None for shards prepared before the checksums were recorded."""
    if any(info.get("checksums") is None for info in shard_infos):
        return None
    digest = hashlib.sha256(mask_fingerprint.encode())
    for info in shard_infos:
        for subject_id, checksum in zip(info["subject_ids"], info.get("checksums") or []):
            digest.update(f"{subject_id}:{checksum};".encode())
    return digest.hexdigest()[:32]


def write_provenance(out_path, source, name, mask_info, shard_info_paths, subjects_sheet=None):
    """Write the provenance sidecar.

    Parameters
    ----------
    source : {"format", "path"[, "run_frames"]} as the preparation tasks read the connectome.
    name : the connectome's name.
    mask_info : the mask's description (lnm/connectome/mask.json).
    shard_info_paths : the shards' JSON (subject ids, runs, frames, checksums), in order.
    subjects_sheet : the subject sheet (format nifti) or subset sheet, if any.
    """
    infos = []
    for path in shard_info_paths:
        with open(path) as handle:
            infos.append(json.load(handle))
    subjects = []
    for info in infos:
        offsets = info["frame_offsets"]
        for index, subject_id in enumerate(info["subject_ids"]):
            subjects.append({"subject_id": subject_id, "runs": info["runs"][index],
                             "frames": offsets[index + 1] - offsets[index]})
    record = {
        "name": name,
        "format": source["format"],
        "path": source.get("path"),
        "subjects_sheet": subjects_sheet,
        "run_frames": source.get("run_frames"),
        "centring": CENTRING[source["format"]],
        "n_subjects": len(subjects),
        "mask": {"path": mask_info["path"], "n_voxels": mask_info["n_voxels"],
                 "shape": mask_info["shape"], "affine": mask_info["affine"],
                 "fingerprint": mask_info["fingerprint"]},
        "storage_dtype": infos[0]["dtype"] if infos else None,
        "content_fingerprint": content_fingerprint(mask_info["fingerprint"], infos),
        "subjects": subjects,
    }
    with atomic_open(out_path, "w") as handle:
        json.dump(record, handle, indent=1)
    return record
