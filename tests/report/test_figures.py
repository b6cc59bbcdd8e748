"""The report's figure functions: real PNGs of a plausible size, clear errors on bad input."""

import json
import struct

import nibabel as nib
import numpy as np
import pytest

from shardmap.cpa.tasks.evaluate import write_group_means
from shardmap.errors import InputError
from shardmap.report.cpa_figures import prediction_figure, subsample, training_figure
from shardmap.report.lnm_figures import lesion_cut, lesion_figure, qc_figure, sensitivity_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) of a PNG, from its IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def t_map_on_mask(dataset, path, peak=12.0):
    mask = nib.load(dataset["mask"])
    inside = np.asarray(mask.dataobj) > 0
    grid = np.indices(mask.shape).astype(float)
    centre = np.asarray(mask.shape)[:, None, None, None] / 2
    t = peak * np.exp(-((grid - centre) ** 2).sum(0) / 20.0) - 3.0
    nib.save(nib.Nifti1Image(np.where(inside, t, 0).astype(np.float32), mask.affine), str(path))
    return path


def test_lesion_figure_is_a_readable_png(dataset, tmp_path):
    lesion_id, lesion_path, group = dataset["lesions"][0]
    t_path = t_map_on_mask(dataset, tmp_path / "t.nii.gz")
    out = tmp_path / "lesion.png"
    lesion_figure(lesion_path, t_path, dataset["mask"], out, lesion_id, threshold=5.0, n_subjects=5, group=group)
    width, height = png_size(out)
    assert width >= 1000 and height >= 900
    assert out.stat().st_size > 50_000  # slices, glass brain and colour bars, not an empty canvas


def test_one_job_draws_its_lesions_with_the_template_loaded_once(dataset, tmp_path, monkeypatch):
    from shardmap.report import lnm_figures

    loads = []
    real_template = lnm_figures._template
    monkeypatch.setattr(lnm_figures, "_template", lambda: loads.append(1) or real_template())
    t_path = t_map_on_mask(dataset, tmp_path / "t.nii.gz")
    items = [(lesion_id, group, path, t_path, tmp_path / f"{lesion_id}.png") for lesion_id, path, group
             in dataset["lesions"][:3]]
    lnm_figures.lesion_figures(items, dataset["mask"], threshold=5.0, n_subjects=5)
    assert len(loads) == 1
    assert all(png_size(png)[0] >= 1000 for *_, png in items)


@pytest.fixture(scope="module")
def mapped(dataset, tmp_path_factory):
    from pipeline import run_library

    folder = tmp_path_factory.mktemp("mapped")
    return folder, run_library(dataset, folder, lesion_batch_size=3, subject_shard_size=5)


def test_the_lesion_summary_holds_every_lesion_s_peak_and_extent(dataset, mapped):
    """Against the T maps written to NIfTI (float32), lesion by lesion."""
    from shardmap.report.lnm_figures import lesion_summaries

    folder, maps = mapped
    stats = [(folder / f"merged-{b}.npy", folder / f"merged-{b}.json") for b in range(2)]
    rows, n_voxels = lesion_summaries(stats, threshold=2.0)
    inside = np.asarray(nib.load(dataset["mask"]).dataobj) > 0
    assert n_voxels == int(inside.sum()) and set(rows) == set(maps)
    for lesion_id, (peak, above, below) in rows.items():
        t = maps[lesion_id]["T"][inside]
        assert peak == pytest.approx(np.abs(t).max(), rel=1e-6)
        assert (above, below) == (int((t > 2.0).sum()), int((t < -2.0).sum()))


def test_the_lesion_summary_says_how_many_lesions_have_a_figure(dataset, mapped, tmp_path, monkeypatch):
    from shardmap.lnm.lesions import concat_qc_tables
    from shardmap.report import lnm_figures

    folder, _ = mapped
    concat_qc_tables([folder / f"batch-{b}.qc.tsv" for b in range(2)], tmp_path / "qc.tsv")
    titles = []
    real_save = lnm_figures.save_png
    monkeypatch.setattr(lnm_figures, "save_png",
                        lambda figure, path: titles.append(figure._suptitle.get_text()) or real_save(figure, path))
    stats = [(folder / f"merged-{b}.npy", folder / f"merged-{b}.json") for b in range(2)]
    lnm_figures.lesion_summary_figure(stats, tmp_path / "qc.tsv", tmp_path / "summary.png", 2.0, n_figures=2, cap=2)
    assert "2 of 4 lesions have a figure of their own (report_lesion_figures: 2); every lesion is here" in titles[0]
    assert png_size(tmp_path / "summary.png")[0] >= 1200


def test_lesion_figure_refuses_a_map_off_the_mask_grid(dataset, tmp_path):
    lesion_id, lesion_path, _ = dataset["lesions"][0]
    mask = nib.load(dataset["mask"])
    shifted = mask.affine.copy()
    shifted[:3, 3] += 4.0
    nib.save(nib.Nifti1Image(np.ones(mask.shape, np.float32), shifted), str(tmp_path / "t.nii.gz"))
    with pytest.raises(InputError, match="is not on the grid of the brain mask"):
        lesion_figure(lesion_path, tmp_path / "t.nii.gz", dataset["mask"], tmp_path / "x.png", lesion_id, 5.0)
    assert not (tmp_path / "x.png").exists()


def test_empty_lesion_is_refused_with_its_id(dataset, tmp_path):
    mask = nib.load(dataset["mask"])
    nib.save(nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine), str(tmp_path / "empty.nii.gz"))
    t_path = t_map_on_mask(dataset, tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="lesion 'empty'.*no voxel > 0"):
        lesion_figure(tmp_path / "empty.nii.gz", t_path, dataset["mask"], tmp_path / "x.png", "empty", 5.0)


def test_cut_passes_through_the_lesion(dataset):
    _, lesion_path, _ = dataset["lesions"][0]
    lesion = nib.load(lesion_path)
    cut = lesion_cut(lesion)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(lesion.affine), cut)).astype(int)
    assert np.asarray(lesion.dataobj)[tuple(ijk)] > 0


def test_sensitivity_figure_with_and_without_voxels(dataset, tmp_path):
    mask = nib.load(dataset["mask"])
    inside = (np.asarray(mask.dataobj) > 0).astype(np.float32)
    nib.save(nib.Nifti1Image(inside * 0.5, mask.affine), str(tmp_path / "pos.nii.gz"))
    nib.save(nib.Nifti1Image(inside * 0.0, mask.affine), str(tmp_path / "neg.nii.gz"))
    out = tmp_path / "sens.png"
    sensitivity_figure(tmp_path / "pos.nii.gz", tmp_path / "neg.nii.gz", dataset["mask"], out, 7.0, group="g1",
                       n_lesions=2)
    assert png_size(out)[0] >= 1200


def test_qc_figure_and_a_table_without_its_columns(tmp_path):
    table = tmp_path / "qc.tsv"
    table.write_text("lesion_id\tgroup\tn_voxels_in_mask\tfraction_outside_mask\n"
                     "a\tg1\t10\t0.0\nb\tg2\t25\t0.4\n")
    qc_figure(table, tmp_path / "qc.png")
    assert png_size(tmp_path / "qc.png")[1] > 500
    (tmp_path / "bad.tsv").write_text("lesion_id\tn_voxels_in_mask\na\t3\n")
    with pytest.raises(InputError, match="fraction_outside_mask"):
        qc_figure(tmp_path / "bad.tsv", tmp_path / "bad.png")


def test_training_figure_names_the_covariate_adversary(tmp_path):
    history = {"train_loss": [5.0, 4.0, 3.5], "reconstruction_loss": [5.0, 4.1, 3.6],
               "validation_loss": [5.2, 4.3, 3.9], "adv_loss": [1.0, 0.9, 0.95], "adv_penalty": [0.1, 0.05, 0.02],
               "acc_perturbation": [0.5, 0.3, 0.2], "acc_covariate_0": [0.9, 0.6, 0.4]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    training_figure(tmp_path / "history.json", tmp_path / "training.png", ["cell_type"])
    assert png_size(tmp_path / "training.png")[0] >= 1200
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(InputError, match="empty"):
        training_figure(tmp_path / "empty.json", tmp_path / "x.png")


def test_prediction_figure_from_the_saved_means(tmp_path):
    rng = np.random.default_rng(0)
    genes = np.array([f"g{i}" for i in range(50)])
    means = {}
    for key in [("A+B", "1+1", "t0"), ("A+B", "1+1", "t1")]:
        observed = rng.gamma(2.0, size=50)
        means[key] = (observed, observed + rng.normal(0, 0.2, 50), observed * 0.5, np.arange(20))
    write_group_means(tmp_path / "means.npz", means, genes, 20, "log1p(CP10k)")
    with np.load(tmp_path / "means.npz") as data:
        assert list(data["covariates"]) == ["t0", "t1"] and data["observed"].shape == (2, 50)
    prediction_figure(tmp_path / "means.npz", tmp_path / "pred.png")
    assert png_size(tmp_path / "pred.png")[0] >= 600


def test_subsample_is_seeded_sorted_and_bounded():
    first, again = subsample(100_000, 20_000, seed=3), subsample(100_000, 20_000, seed=3)
    assert first.size == 20_000 and np.array_equal(first, again)
    assert np.all(np.diff(first) > 0)
    assert np.array_equal(subsample(50, 20_000), np.arange(50))
