"""The sheet of every lesion's maps, ``{outdir}/lnm/maps.tsv``: what other tools read.

One row per lesion: its id, group and mask; the paths of its AvgR, AvgR_Fz and T maps;
its volume; and the connectome that made the maps. The columns ``lesion_id``, ``map``
(the T map), ``group`` and ``path`` make it a lesion map sheet as lnm.specificity.maps
reads it (workflow/schemas/lesion_maps.schema.yaml), and the sheet lnm-toolkit's command
line takes (``--subject-col lesion_id --network-col T --roi-col path``).
"""

from __future__ import annotations

import csv

from ..atomic import atomic_open

COLUMNS = ("lesion_id", "group", "path", "map", "AvgR", "AvgR_Fz", "T", "n_voxels_in_mask", "volume_mm3",
           "connectome")


def write_maps_table(out_path, qc_table, map_files, connectome_name):
    """Write the maps sheet.

    Parameters
    ----------
    out_path : the TSV to write.
    qc_table : the lesions' QC table (lnm/qc/lesions.tsv): lesion_id, group, path, the
        lesion's voxels inside the mask (``n_voxels_in_mask``, the specificity GLM's
        ``volume`` covariate) and its volume as drawn (``volume_input_mm3``).
    map_files : {lesion_id: {"AvgR": path, "AvgR_Fz": path, "T": path}}.
    connectome_name : lnm.connectome.name (or its default).
    """
    with open(qc_table, newline="") as handle:
        lesions = list(csv.DictReader(handle, delimiter="\t"))
    with atomic_open(out_path, "w") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in lesions:
            maps = map_files[row["lesion_id"]]
            writer.writerow([row["lesion_id"], row.get("group", ""), row["path"], maps["T"], maps["AvgR"],
                             maps["AvgR_Fz"], maps["T"], row["n_voxels_in_mask"], row["volume_input_mm3"],
                             connectome_name])
    return len(lesions)
