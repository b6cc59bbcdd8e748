"""The specificity figures: readable PNGs from small maps on a 2 mm MNI grid, the empty
cases drawn with their text, and clear errors for maps off the grid or a bad null table."""

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from shardmap.errors import InputError
from shardmap.report import specificity_figures as figures

# A 2 mm MNI152-like grid (LAS, as FSL writes it), small enough to draw quickly.
AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -60.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
SHAPE = (40, 50, 36)
N_PERMUTATIONS = 200


def save(values, path, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(values, dtype=np.float32), affine), str(path))
    return path


def blob(centre_mm, radius_mm):
    """The voxels within ``radius_mm`` of ``centre_mm`` (world coordinates)."""
    ijk = np.indices(SHAPE).reshape(3, -1).T
    world = nib.affines.apply_affine(AFFINE, ijk)
    return (((world - centre_mm) ** 2).sum(1) <= radius_mm ** 2).reshape(SHAPE)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """Mask, t, FWE p and conjunction (a positive and a negative blob) and the null table."""
    folder = tmp_path_factory.mktemp("specificity")
    inside = blob((0.0, -10.0, 4.0), 34.0)
    up, down = blob((-12.0, -10.0, 8.0), 8.0), blob((14.0, -20.0, 0.0), 6.0)
    t = np.where(inside, 0.5, 0.0) + 6.0 * up - 5.0 * down
    p = np.where(inside, np.where(up | down, 0.001, 0.6), 0.0)  # 0 outside the mask, as the step writes it
    conjunction = up.astype(float) - (down & blob((14.0, -20.0, 0.0), 3.0))
    null = np.random.default_rng(0).gamma(9.0, 0.4, N_PERMUTATIONS)
    rows = "".join(f"{i}\t{v:.6g}\t{v * 30:.6g}\n" for i, v in enumerate(null))
    (folder / "null_max.tsv").write_text("permutation\tmax_abs_t\tmax_abs_tfce\n" + rows)
    return {"mask": save(inside, folder / "mask.nii.gz"), "tstat": save(t, folder / "tstat.nii.gz"),
            "p": save(p, folder / "p_fwe.nii.gz"), "conjunction": save(conjunction, folder / "conjunction.nii.gz"),
            "tfce": save(t * 30, folder / "tfce.nii.gz"), "null_max": folder / "null_max.tsv",
            "zeros": save(np.zeros(SHAPE), folder / "zeros.nii.gz"),
            "ones": save(np.where(inside, 1.0, 0.0), folder / "ones.nii.gz")}


def image_size(path):
    """(height, width) of a PNG that matplotlib reads back, with more than one colour."""
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.std() > 0, f"{path} is a blank image"
    return pixels.shape[:2]


def suptitles(monkeypatch):
    """The figure titles of every figure saved from now on (the figures are still written)."""
    titles, real_save = [], figures.save_png

    def save_png(figure, path):
        texts = [figure._suptitle.get_text()] + [t.get_text() for ax in figure.axes for t in ax.texts]
        titles.append(" | ".join(texts))
        real_save(figure, path)

    monkeypatch.setattr(figures, "save_png", save_png)
    return titles


def test_the_three_figures_are_readable_pngs(maps, tmp_path, monkeypatch):
    titles = suptitles(monkeypatch)
    outputs = {"tstat": tmp_path / "t.png", "conjunction": tmp_path / "conj.png", "null": tmp_path / "null.png"}
    paths = {name: maps[name] for name in ("tstat", "p", "conjunction", "null_max")}
    figures.specificity_figures(paths, maps["mask"], outputs, alpha=0.05, fraction=0.75)
    n_significant = int((np.asarray(nib.load(str(maps["p"])).dataobj)[
        np.asarray(nib.load(str(maps["mask"])).dataobj) > 0] < 0.05).sum())
    assert f"{n_significant} voxels with FWE p < 0.05" in titles[0]
    assert "in >= 75 % of the cases' sensitivity map" in titles[1]
    conjunction = np.asarray(nib.load(str(maps["conjunction"])).dataobj)
    assert f"{int((conjunction > 0).sum())} positive (red) and {int((conjunction < 0).sum())} negative" in titles[1]
    for png in outputs.values():
        height, width = image_size(png)
        assert width >= 700 and height >= 400


def test_the_null_figure_has_a_tfce_panel_when_there_is_tfce(maps, tmp_path):
    figures.null_distribution_figure(maps["null_max"], maps["tstat"], tmp_path / "t.png", 0.05)
    figures.null_distribution_figure(maps["null_max"], maps["tstat"], tmp_path / "both.png", 0.05,
                                     tfce_path=maps["tfce"])
    assert image_size(tmp_path / "both.png")[1] > 1.5 * image_size(tmp_path / "t.png")[1]


def test_nothing_significant_still_draws_with_its_text(maps, tmp_path, monkeypatch):
    titles = suptitles(monkeypatch)
    figures.specificity_t_figure(maps["tstat"], maps["ones"], maps["mask"], tmp_path / "t.png", 0.05)
    figures.conjunction_figure(maps["zeros"], maps["mask"], tmp_path / "conj.png", 0.05, 0.5)
    assert "0 voxels with FWE p < 0.05" in titles[0] and "no voxel with FWE p < 0.05" in titles[0]
    assert "0 positive (red) and 0 negative (blue)" in titles[1]
    assert "no voxel with FWE p < 0.05 and in >= 50 % of the cases' sensitivity map" in titles[1]
    for png in ("t.png", "conj.png"):
        assert image_size(tmp_path / png)[1] >= 700


def test_the_p_map_is_read_inside_the_mask_only(maps, tmp_path, monkeypatch):
    """The p map is 0 outside the mask: those voxels are not significant."""
    titles = suptitles(monkeypatch)
    figures.specificity_t_figure(maps["tstat"], maps["zeros"], maps["mask"], tmp_path / "t.png", 0.05,
                                 p_label="TFCE FWE")
    inside = int((np.asarray(nib.load(str(maps["mask"])).dataobj) > 0).sum())
    assert f"{inside} voxels with TFCE FWE p < 0.05" in titles[0]


def test_a_map_off_the_mask_grid_is_refused_by_name(maps, tmp_path):
    shifted = AFFINE.copy()
    shifted[:3, 3] += 4.0
    moved = save(np.asarray(nib.load(str(maps["conjunction"])).dataobj), tmp_path / "moved.nii.gz", shifted)
    with pytest.raises(InputError, match=r"moved\.nii\.gz.*is not on the grid of the brain mask"):
        figures.conjunction_figure(moved, maps["mask"], tmp_path / "x.png", 0.05, 0.75)
    with pytest.raises(InputError, match=r"moved\.nii\.gz.*is not on the grid"):
        figures.specificity_t_figure(maps["tstat"], moved, maps["mask"], tmp_path / "x.png", 0.05)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("text, problem", [
    ("permutation\tmax_t\n0\t3.1\n", r"lacks the column\(s\) \['max_abs_t'\]"),
    ("permutation\tmax_abs_t\n", "has no rows"),
    ("", "lacks the column"),
    ("permutation\tmax_abs_t\n0\tabc\n", "non-numeric"),
])
def test_a_bad_null_table_is_refused_by_name(maps, tmp_path, text, problem):
    (tmp_path / "null.tsv").write_text(text)
    with pytest.raises(InputError, match=f"null.tsv.*{problem}"):
        figures.null_distribution_figure(tmp_path / "null.tsv", maps["tstat"], tmp_path / "x.png", 0.05)
    assert not (tmp_path / "x.png").exists()
