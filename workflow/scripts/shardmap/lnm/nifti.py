"""Reading and writing NIfTI images at the boundary, with errors that name the file.

The core of the library works on flat arrays in *mask order*: the C-order sequence of
the voxels where the brain mask is > 0. ``BrainMask`` converts between the two.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ..atomic import atomic_open, atomic_path
from ..errors import InputError

# Two grids are the same when their affines agree to this many millimetres.
AFFINE_ATOL_MM = 1e-3


def load_image(path, what):
    """Load a NIfTI image header (data stays on disk) or raise InputError naming ``path``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist; fix the path in the sample sheet or config.")
    if path.is_dir():
        raise InputError(f"{what} '{path}' is a directory, not a file; give the path of the NIfTI file "
                         "(.nii or .nii.gz) inside it.")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        misnamed = _compression_mismatch(path)
        if misnamed:
            raise InputError(f"{what} '{path}' {misnamed}") from err
        raise InputError(f"{what} '{path}' is not a readable NIfTI image ({err}); "
                         "re-export it as .nii or .nii.gz.") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{what} '{path}' is a {type(img).__name__}, not NIfTI; convert it to .nii.gz.")
    return img


GZIP_MAGIC = b"\x1f\x8b"
NIFTI_HEADER_SIZES = (348, 540)  # sizeof_hdr of NIfTI-1 and NIfTI-2, the first 4 bytes


def _looks_like_nifti(first_bytes):
    return any(int.from_bytes(first_bytes[:4], order) in NIFTI_HEADER_SIZES for order in ("little", "big"))


def _compression_mismatch(path):
    """What is wrong when a NIfTI file's name and its gzip compression disagree, else None."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
        gzipped = start[:2] == GZIP_MAGIC
        if gzipped:
            with gzip.open(path, "rb") as handle:
                start = handle.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    if not _looks_like_nifti(start):
        return None
    if gzipped and not path.name.endswith(".gz"):
        return f"is gzip-compressed but named '{path.name}'; rename it to '{path.name}.gz'."
    if not gzipped and path.name.endswith(".gz"):
        return (f"is named '{path.name}' but is not gzip-compressed; rename it to "
                f"'{path.name[:-3]}' (or compress it with gzip).")
    return None


def read_data(img, path, what, dtype=None):
    """The image's (scaled) voxel array, or InputError if the file is truncated or corrupt."""
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise InputError(f"{what} '{path}' could not be read completely ({err}); the file is "
                         "probably truncated or corrupt: copy or export it again.") from err
    return data if dtype is None else data.astype(dtype, copy=False)


GZIP_MAGIC = b"\x1f\x8b"


def open_gzip(path):
    """A gzip file opened for reading: python-isal's igzip where it is installed (1.5-2 x
    zlib's speed on this project's machines, docs/benchmarks.md), else the standard
    library's. Both release the GIL while they decode."""
    try:
        from isal import igzip
    except ImportError:
        return gzip.open(path, "rb")
    return igzip.open(path, "rb")


def decoded_bytes(path, what, img=None, out=None):
    """The decompressed bytes of a gzipped NIfTI file at ``path``, or None if it is not
    gzipped (an uncompressed .nii is read through a memory map instead).

    With ``img`` (its header) and ``out`` (a reused uint8 buffer, ``connectome.buffers``),
    the header and data the header announces are decoded into ``out`` and a view of them
    is returned: writing into memory already touched is what keeps decoding at the
    decoder's own speed here (fresh memory is mapped page by page, at 0.4-5 GB/s).
    """
    with open(path, "rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            return None
    try:
        with open_gzip(path) as stream:
            if img is None or out is None:
                return stream.read()
            wanted = decoded_size(img)
            view = memoryview(out)[:wanted]
            filled = 0
            while filled < wanted:
                got = stream.readinto(view[filled:])
                if not got:
                    raise EOFError(f"the data end after {filled} of the {wanted} bytes its header announces")
                filled += got
            stream.read(1)  # to the end of the stream: gzip's CRC and length checks
            return view
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise InputError(f"{what} '{path}' could not be read completely ({err}); the file is "
                         "probably truncated or corrupt: copy or export it again.") from err


def decoded_size(img):
    """Bytes of a NIfTI file's header and data, decompressed (from its header)."""
    proxy = img.dataobj
    return int(proxy.offset) + int(np.prod(img.shape)) * np.dtype(proxy.dtype).itemsize


def mask_frames(img, raw, path, what, mask, out=None, scratch=None):
    """A 4D image's values at the mask voxels as a (T, V) float64 array (a frame per row).

    ``raw``: the file's decompressed bytes (``decoded_bytes``) or None. A 4D image stores
    its frames one after the other (Fortran order), so with the bytes at hand each frame is
    a contiguous row from which the mask voxels are gathered, and the scaling of the header
    (scl_slope, scl_inter) is applied to them alone, exactly as nibabel applies it to the
    whole array. Otherwise nibabel reads the array (a memory map for an uncompressed file).
    ``out`` ((T, V) float64) and ``scratch`` ((T, V) of the file's dtype) may be given to
    be filled instead of new arrays (``connectome.buffers``).
    """
    proxy = img.dataobj
    shape = tuple(img.shape)
    if raw is not None and len(shape) == 4 and getattr(proxy, "order", None) == "F" and hasattr(proxy, "offset"):
        dtype = np.dtype(proxy.dtype)
        count = int(np.prod(shape))
        if len(raw) < proxy.offset + count * dtype.itemsize:
            raise InputError(f"{what} '{path}' could not be read completely (its data end before the "
                             f"{count} values its header announces); the file is probably truncated: copy "
                             "or export it again.")
        frames = np.frombuffer(raw, dtype, count, proxy.offset).reshape(shape[3], -1)
        if scratch is not None and (scratch.dtype != dtype or scratch.shape != (shape[3], mask.n_voxels)):
            scratch = None
        values = apply_read_scaling(mask.frame_voxels(frames, scratch), proxy.slope, proxy.inter)
    else:
        data = read_data(img, path, what)
        i, j, k = mask.ijk.T
        values = data[i, j, k].T
    if out is None:
        return np.ascontiguousarray(values, dtype=np.float64)
    np.copyto(out, values, casting="unsafe")
    return out


def squeeze_to_3d(data, path, what):
    """Drop trailing singleton axes; raise unless a 3D volume remains."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what} '{path}' has shape {shape}; it must be a single 3D volume "
                         "(split 4D files and keep one volume).")
    return data


@dataclass
class BrainMask:
    """A brain mask: its grid and the flat C-order indices of its voxels (> 0)."""

    path: str
    shape: tuple
    affine: np.ndarray
    flat_index: np.ndarray  # int64, indices into the raveled (C-order) grid
    header: nib.Nifti1Header

    @property
    def n_voxels(self):
        return int(self.flat_index.size)

    @functools.cached_property
    def ijk(self):
        """(n_voxels, 3) voxel coordinates of the mask voxels, in mask order."""
        return np.column_stack(np.unravel_index(self.flat_index, self.shape))

    @functools.cached_property
    def fortran_index(self):
        """The mask voxels' flat indices into the grid in Fortran order (NIfTI's on-disk
        order), in mask order."""
        return np.ravel_multi_index(tuple(self.ijk.T), self.shape, order="F")

    @functools.cached_property
    def fortran_gather(self):
        """(sorted Fortran indices, the permutation from their order to mask order): a
        frame's mask voxels are read in memory order, then put in mask order. Reading a
        3.6 MB frame in mask order jumps 40 KB per voxel and takes 8 x longer here."""
        order = np.argsort(self.fortran_index, kind="stable")
        to_mask_order = np.empty_like(order)
        to_mask_order[order] = np.arange(order.size)
        return self.fortran_index[order], to_mask_order

    def frame_voxels(self, frames, out=None):
        """The mask voxels of every frame of ``frames`` ((T, grid voxels), each row a frame in
        Fortran order), as a (T, V) array of the same dtype, in mask order (into ``out``)."""
        in_memory_order, to_mask_order = self.fortran_gather
        if out is None:
            out = np.empty((frames.shape[0], self.n_voxels), dtype=frames.dtype)
        for row, frame in zip(out, frames):
            np.take(np.take(frame, in_memory_order), to_mask_order, out=row)
        return out

    def same_grid(self, img):
        return (tuple(img.shape[:3]) == tuple(self.shape)
                and np.allclose(img.affine, self.affine, atol=AFFINE_ATOL_MM))

    def to_volume(self, values, fill=0.0, dtype=np.float32):
        """Scatter mask-ordered ``values`` into a full 3D volume (``fill`` outside the mask)."""
        volume = np.full(int(np.prod(self.shape)), fill, dtype=dtype)
        volume[self.flat_index] = values
        return volume.reshape(self.shape)

    def fingerprint(self):
        """A short string that changes when the grid or the voxel set changes."""
        digest = zlib.crc32(self.flat_index.tobytes())
        digest = zlib.crc32(np.round(self.affine, 4).tobytes(), digest)
        return f"{self.shape}-{digest:08x}"


def load_mask(path):
    """Load the brain mask (voxels > 0); raise InputError if unusable."""
    img = load_image(path, "brain mask")
    data = squeeze_to_3d(read_data(img, path, "brain mask"), path, "brain mask")
    finite = np.nan_to_num(data.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    flat_index = np.flatnonzero(finite.ravel(order="C") > 0)
    if flat_index.size == 0:
        raise InputError(f"brain mask '{path}' has no voxel > 0; point lnm.connectome.mask at a brain mask.")
    return BrainMask(str(path), tuple(data.shape), img.affine.copy(), flat_index, img.header)


def write_map(path, values, mask, description=""):
    """Write mask-ordered float values as a float32 NIfTI on the mask grid, atomically.

    Voxels outside the mask are 0. The header carries the mask's affine as both sform
    and qform, so other tools place the map exactly where the mask is.
    """
    volume = mask.to_volume(np.asarray(values, dtype=np.float32))
    img = nib.Nifti1Image(volume, mask.affine)
    sform_code = int(mask.header["sform_code"]) or 4
    qform_code = int(mask.header["qform_code"]) or sform_code
    img.set_sform(mask.affine, code=sform_code)
    img.set_qform(mask.affine, code=qform_code)
    img.header.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description[:79].encode()
    finite = volume[np.isfinite(volume)]
    img.header["cal_min"] = float(finite.min()) if finite.size else 0.0
    img.header["cal_max"] = float(finite.max()) if finite.size else 0.0
    if not str(path).endswith(".gz"):
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
        return
    with atomic_open(path) as handle:
        handle.write(gzip_bytes(img.to_bytes()))


def gzip_bytes(data):
    """``data`` as a gzip stream at level 1, as nibabel writes .nii.gz, with python-isal's
    igzip where installed (5 x faster than zlib here: 7 against 39 ms for a 2 mm map) and
    no time stamp, so that equal maps are equal files."""
    try:
        from isal import igzip
    except ImportError:
        return gzip.compress(data, 1, mtime=0)
    return igzip.compress(data, 1, mtime=0)


def write_mask_info(mask_path, info_path):
    """Write the mask's voxel count, grid and fingerprint as JSON (read for resource requests)."""
    import json

    from ..atomic import atomic_open

    mask = load_mask(mask_path)
    info = {"path": str(mask_path), "n_voxels": mask.n_voxels, "shape": list(mask.shape),
            "affine": np.round(mask.affine, 6).tolist(), "fingerprint": mask.fingerprint()}
    with atomic_open(info_path, "w") as handle:
        json.dump(info, handle, indent=1)
    return info


# A mask voxel whose finite neighbours carry less than this share of its trilinear weights
# has no finite value to take.
MIN_FINITE_WEIGHT = 1e-9


def values_on_mask(path, mask, what):
    """The values of a 3D NIfTI image at the mask's voxels, taken by world coordinates.

    On the mask's own grid the values are read as they are. On any other grid they are
    interpolated (trilinear) at the mask voxels' centres, with NaN and Inf grid values
    given no weight and the other weights renormalised: maps written by FSL or SPM are NaN
    outside their brain, and a NaN neighbour of weight 0, or of small weight at the brain's
    edge, must not spread into it. Raises InputError naming the file when its field of view
    leaves mask voxels uncovered, when a mask voxel has no finite grid value around it, or
    (on the mask's grid) when a value at a mask voxel is not finite.
    """
    img = load_image(path, what)
    data = squeeze_to_3d(read_data(img, path, what, dtype=np.float64), path, what)
    if mask.same_grid(img):
        values = data.ravel(order="C")[mask.flat_index]
    else:
        world = mask.affine[:3, :3] @ mask.ijk.T + mask.affine[:3, 3:4]
        inverse = np.linalg.inv(img.affine)
        coords = inverse[:3, :3] @ world + inverse[:3, 3:4]
        shape = np.array(data.shape)[:, np.newaxis]
        outside = np.any((coords < -0.5) | (coords > shape - 0.5), axis=0)
        if outside.any():
            raise InputError(
                f"{what} '{path}' (grid {data.shape}, voxel size "
                f"{np.round(np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)), 2).tolist()} mm) does not cover "
                f"{int(outside.sum())} of the {mask.n_voxels} voxels of the brain mask '{mask.path}', so it "
                "cannot be resampled to the mask; give a map in the mask's space (e.g. MNI152) that covers "
                "the whole brain.")
        values = _interpolate_finite(data, coords, path, mask, what)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"{what} '{path}' is NaN or Inf at {int(bad.sum())} voxel(s) of the brain mask "
                         f"'{mask.path}'; a map needs a finite value at every mask voxel (set them to 0 or "
                         "use a mask that excludes them).")
    return values


def _interpolate_finite(data, coords, path, mask, what):
    """Trilinear values of ``data`` at ``coords`` (grid coordinates, one column per mask
    voxel), over its finite values only: sum of w f over the finite neighbours divided by
    the sum of their w. Interpolation is linear, so that is the interpolation of the data
    with non-finite values set to 0, divided by that of the finite indicator."""
    from scipy.ndimage import map_coordinates

    finite = np.isfinite(data)
    if finite.all():
        return map_coordinates(data, coords, order=1, mode="nearest")
    weight = map_coordinates(finite.astype(np.float64), coords, order=1, mode="nearest")
    total = map_coordinates(np.where(finite, data, 0.0), coords, order=1, mode="nearest")
    empty = weight < MIN_FINITE_WEIGHT
    if empty.any():
        raise InputError(f"{what} '{path}' has no finite value (NaN or Inf at every grid point around it) at "
                         f"{int(empty.sum())} of the {mask.n_voxels} voxels of the brain mask '{mask.path}', so "
                         "they cannot be resampled; give a map with finite values over the whole brain "
                         "(non-finite values outside it are fine).")
    return total / weight
