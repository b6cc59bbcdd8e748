"""The hub controls' figures: readable PNGs from small maps on a 2 mm MNI grid, the empty
cases drawn with their text, and a clear error for a map off the mask's grid."""

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from shardmap.errors import InputError
from shardmap.lnm.hubs.hub_bias import HUB_BIAS_COLUMNS
from shardmap.lnm.hubs.tables import write_table
from shardmap.report import hub_figures as figures

AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -60.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
SHAPE = (40, 50, 36)


def save(values, path, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(values, dtype=np.float32), affine), str(path))
    return str(path)


def blob(centre_mm, radius_mm):
    ijk = np.indices(SHAPE).reshape(3, -1).T
    world = nib.affines.apply_affine(AFFINE, ijk)
    return (((world - centre_mm) ** 2).sum(1) <= radius_mm ** 2).reshape(SHAPE)


def readable(path):
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.std() > 0, f"{path} is a blank image"
    return pixels.shape[:2]


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hubs")
    inside = blob((0.0, -10.0, 4.0), 34.0)
    hub = blob((10.0, -30.0, 10.0), 10.0)
    network = blob((-14.0, 0.0, 0.0), 7.0)
    degree = np.where(inside, 0.02 + 0.1 * hub, 0.0)
    return {"mask": save(inside, folder / "mask.nii.gz"), "degree": save(degree, folder / "degree.nii.gz"),
            "real": save(inside * (0.2 + 0.7 * network), folder / "real.nii.gz"),
            "null": save(inside * (0.1 + 0.6 * hub), folder / "null.nii.gz"),
            "versus": save(np.where(inside, np.where(network, 99.5, 40.0), 0.0), folder / "versus.nii.gz"),
            "zeros": save(np.zeros(SHAPE), folder / "zeros.nii.gz"),
            "off_grid": save(degree, folder / "off.nii.gz", shifted_affine(4.0))}


def shifted_affine(mm):
    affine = AFFINE.copy()
    affine[:3, 3] += mm
    return affine


def test_degree_and_null_figures_are_readable(maps, tmp_path):
    figures.degree_figure(maps["degree"], maps["mask"], tmp_path / "degree.png")
    figures.null_figure(maps["real"], maps["null"], maps["versus"], maps["mask"], tmp_path / "null.png", 7.0,
                        group="A", n_lesions=12, n_null=48)
    assert readable(tmp_path / "degree.png")[1] > 1000
    assert readable(tmp_path / "null.png")[0] > 800


def test_a_null_figure_with_nothing_beyond_the_threshold_says_so(maps, tmp_path):
    figures.null_figure(maps["zeros"], maps["zeros"], maps["zeros"], maps["mask"], tmp_path / "empty.png", 7.0)
    readable(tmp_path / "empty.png")


def test_hub_bias_figure_reads_the_table_with_missing_values(tmp_path):
    rows = [{"kind": "lesion", "lesion_id": f"L{i}", "group": "AB"[i % 2] if i < 6 else "", "map": "AvgR_Fz",
             "r_with_degree": 0.1 * i, "n_voxels_compared": 900, "site_mean_degree": 0.01 * i,
             "site_degree_percentile": 10.0 * i} for i in range(8)]
    rows += [{"kind": "group_map", "lesion_id": "", "group": group, "map": name,
              "r_with_degree": float("nan") if name == "sensitivity_neg" else 0.5, "n_voxels_compared": 1000,
              "site_mean_degree": "", "site_degree_percentile": ""}
             for group in ("all", "A", "B") for name in ("sensitivity_pos", "sensitivity_neg", "mean_AvgR_Fz")]
    write_table(tmp_path / "hub_bias.tsv", rows, HUB_BIAS_COLUMNS)
    assert "\tNA\t" in (tmp_path / "hub_bias.tsv").read_text()
    figures.hub_bias_figure(tmp_path / "hub_bias.tsv", tmp_path / "hub_bias.png")
    readable(tmp_path / "hub_bias.png")


def test_a_map_off_the_masks_grid_is_refused(maps, tmp_path):
    with pytest.raises(InputError, match="is not on the grid of the brain mask"):
        figures.degree_figure(maps["off_grid"], maps["mask"], tmp_path / "off.png")
    assert not (tmp_path / "off.png").exists()
