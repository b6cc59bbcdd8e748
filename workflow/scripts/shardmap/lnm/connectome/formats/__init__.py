"""Connectomes prepared by other tools, read where they lie (lnm.connectome.format):
lacuna's HDF5 (``lacuna``), the Fox lab's connectome_quick .npy files
(``connectome_quick``) and Lead-DBS time courses (``leaddbs``). The shard preparation
converts them into shardmap's own shards, so everything downstream is the same as for
NIfTI runs (docs/benchmarks.md measures why conversion beats reading them in every
mapping task)."""

from __future__ import annotations

from ....errors import InputError
from .connectome_quick import ConnectomeQuick
from .lacuna import LacunaConnectome
from .leaddbs import LeadDbsConnectome

FORMATS = {cls.format: cls for cls in (LacunaConnectome, ConnectomeQuick, LeadDbsConnectome)}


def open_connectome(format, path, run_frames=None):
    """The prepared connectome of ``format`` at ``path`` (raises InputError naming what is
    wrong with it)."""
    if format not in FORMATS:
        raise InputError(f"lnm.connectome.format is '{format}'; use nifti or one of {sorted(FORMATS)}.")
    return FORMATS[format](path, run_frames)


def connectome_subjects(format, path, run_frames=None, subset_sheet=None):
    """The subjects of the prepared connectome (sheets.Subject), all of them or those a
    subset sheet names, in its order. Read from the files' indexes only (file names, HDF5
    shapes, Lead-DBS's vol.subIDs), in the Snakemake process while the job graph is built."""
    return selected_subjects(open_connectome(format, path, run_frames), subset_sheet)


def selected_subjects(connectome, subset_sheet=None):
    """connectome_subjects of an opened connectome."""
    format, path = connectome.format, connectome.path
    subjects = connectome.subjects()
    if subset_sheet:
        from ...sheets import read_subject_selection
        from .base import select_subjects

        return select_subjects(subjects, read_subject_selection(subset_sheet), subset_sheet, connectome)
    if len(subjects) < 2:
        raise InputError(f"the {format} connectome '{path}' holds {len(subjects)} subject; the T map needs at "
                         "least 2 connectome subjects.")
    return subjects


def connectome_index_files(format, path):
    """The files besides the subjects' own that say how to read them (Lead-DBS's dataset
    files): inputs of the tasks that read the connectome, so that a change reruns them."""
    if format != "leaddbs":
        return []
    return [str(f) for f in LeadDbsConnectome.index_files(path)]


def connectome_mask_files(format, path):
    """The files a prepared connectome's own mask is read from (write_connectome_mask):
    lacuna's first file in name order, Lead-DBS's dataset files."""
    if format == "lacuna":
        return LacunaConnectome(path).files[:1]
    return connectome_index_files(format, path)


def check_connectome_files(format, path, run_frames, mask_path, subjects, out_path):
    """Rule lnm_check_inputs for a prepared connectome: check every subject's files from
    their headers (voxels matched to the mask, frames, runs) and write the run inventory."""
    from ...nifti import load_mask
    from ...sheets import as_subjects
    from ..runs import write_run_inventory
    from .base import check_subjects

    rows = check_subjects(open_connectome(format, path, run_frames), as_subjects(subjects), load_mask(mask_path))
    write_run_inventory(rows, out_path)
    return rows


def write_connectome_mask(format, path, out_path):
    """The mask a prepared connectome stores (lacuna, Lead-DBS), as a NIfTI on its own
    grid: the mask the maps are written on when lnm.connectome.mask is left out."""
    import nibabel as nib

    from ....atomic import atomic_path

    connectome = open_connectome(format, path)
    voxels = connectome.own_voxels()
    if voxels is None:
        raise InputError(f"a {format} connectome stores no mask; set lnm.connectome.mask to the mask it was "
                         "made with.")
    img = nib.Nifti1Image(voxels.to_volume(), voxels.affine)
    img.set_sform(voxels.affine, code=4)  # MNI
    img.set_qform(voxels.affine, code=4)
    with atomic_path(out_path) as tmp:
        nib.save(img, str(tmp))
