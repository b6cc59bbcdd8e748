"""Synthetic inputs of GSP1000's shape for the benchmarks: its 2 mm grid and a brain mask
of any number of voxels (292,019: FSL's dilated mask, which GSP1000 is masked with)."""

from __future__ import annotations

import numpy as np

GRID = (91, 109, 91)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def make_mask(n_voxels, grid=GRID):
    """An ellipsoid of exactly ``n_voxels`` voxels (the most central ones), as uint8."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid], indexing="ij"), axis=-1).reshape(-1, 3)
    centre = (np.asarray(grid) - 1) / 2
    distance = (((ijk - centre) / centre) ** 2).sum(axis=1)
    inside = np.zeros(int(np.prod(grid)), dtype=np.uint8)
    inside[np.argsort(distance, kind="stable")[:n_voxels]] = 1
    return inside.reshape(grid)


def read_file(path):
    with open(path, "rb") as handle:
        return handle.read()


def warm(paths):
    """Read every file once, so that a measurement finds them in the page cache."""
    for path in paths:
        if path.is_file():
            read_file(path)


def save_mask(path, n_voxels, grid=GRID):
    """Write make_mask's mask as NIfTI; return its voxels' indices (np.where)."""
    import nibabel as nib

    mask = make_mask(n_voxels, grid)
    nib.save(nib.Nifti1Image(mask, AFFINE), path)
    return np.where(mask > 0)


def save_run(path, values, where, grid=GRID):
    """Write (V, T) float32 ``values`` at the mask voxels ``where`` as a 4D gzipped NIfTI run."""
    import nibabel as nib

    volume = np.zeros(tuple(grid) + (values.shape[1],), dtype=np.float32)
    volume[where] = values
    nib.save(nib.Nifti1Image(volume, AFFINE), path)


def add_shape_arguments(parser, subjects):
    """--voxels, --frames, --subjects (default ``subjects``), --repeats and --smoke."""
    parser.add_argument("--voxels", type=int, default=292019)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--subjects", type=int, default=subjects)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run, for CI")


def grid_of(args):
    """The grid to write; with --smoke, tiny sizes are set on ``args`` too."""
    if not args.smoke:
        return GRID
    args.voxels, args.frames, args.subjects, args.repeats = 2000, 20, 2, 1
    return (20, 20, 20)
