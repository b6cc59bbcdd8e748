"""The outputs of the embedded demo, made by the README's Quick start commands
(`snakemake --cores 2`, then `snakemake --report report.html`) in the repository.

The demo takes about two minutes on two cores, so no test runs it: CI runs the Quick
start first (`.ci/run`) and sets SHARDMAP_REQUIRE_DEMO=1, which makes missing outputs a
failure here. Elsewhere these tests skip until the Quick start has been run.
"""

import csv
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from projects import REPO, SNAKEMAKE

pytestmark = pytest.mark.workflow


def expected_report_files(lesion_sheet):
    """Every file the report must show for the demo: per lesion (12 lesions, below the cap
    of report_lesion_figures), summary, group and QC figures and the QC table; training,
    UMAP and prediction figures and the metrics; config and versions."""
    lesions = [row["lesion_id"] for row in csv.DictReader(open(lesion_sheet), delimiter="\t")]
    groups = sorted({row["group"] for row in csv.DictReader(open(lesion_sheet), delimiter="\t")})
    files = [f"results/figures/lnm/lesions/{lesion}.png" for lesion in lesions]
    files += [f"results/figures/lnm/sensitivity_{group}.png" for group in ["all"] + groups]
    files += ["results/figures/lnm/qc.png", "results/figures/lnm/lesions_summary.png",
              "results/lnm/qc/lesions.tsv"]
    files += [f"results/figures/cpa/{name}.png" for name in ("training", "umap_basal", "umap_latent",
                                                              "predicted_vs_observed", "baselines", "drug_embeddings",
                                                              "dose_response", "umap_query")]
    files += ["results/cpa/embeddings.h5ad", "results/cpa/dose_response.tsv", "results/cpa/query/queries.tsv"]
    files += ["results/cpa/metrics.tsv", "results/report/software.tsv", "results/report/config.yaml"]
    files += [f"results/figures/lnm/specificity_{name}.png" for name in ("tstat", "conjunction", "null")]
    files += ["results/lnm/specificity/design.tsv"]
    hub_figures = ["degree", "hub_bias"] + [f"null_{group}" for group in ["all"] + groups]
    files += [f"results/figures/lnm/{name}.png" for name in hub_figures]
    files += ["results/lnm/qc/hub_bias.tsv", "results/lnm/qc/null_summary.tsv"]
    return files


FIGURES = expected_report_files(REPO / "config" / "demo" / "lesions.tsv")


@pytest.fixture(scope="module")
def demo():
    missing = [name for name in FIGURES + ["report.html"] if not (REPO / name).exists()]
    if missing:
        message = (f"the demo's outputs are missing ({missing[:3]}...): run the README's Quick start "
                   "(snakemake --cores 2 && snakemake --report report.html) first")
        if os.environ.get("SHARDMAP_REQUIRE_DEMO") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return REPO


def test_demo_lesion_maps_and_qc(demo):
    t = np.asarray(nib.load(str(demo / "results" / "lnm" / "maps" / "demo-lesion-01_T.nii.gz")).dataobj)
    assert np.isfinite(t).all() and t.max() > 7.0
    qc = (demo / "results" / "lnm" / "qc" / "lesions.tsv").read_text().splitlines()
    assert len(qc) == 13
    for group in ("A", "B"):
        assert (demo / "results" / "lnm" / "group" / group / "sensitivity_pos.nii.gz").exists()


def test_demo_hub_controls(demo):
    """The degree map, the hub-bias table and the random-lesion null of the demo (n = 120,
    keep_maps false: the null lesions' sums are gone once their group maps are made)."""
    lnm = demo / "results" / "lnm"
    degree = np.asarray(nib.load(str(lnm / "connectome" / "degree.nii.gz")).dataobj)
    assert np.isfinite(degree).all() and degree.max() > 0.05
    rows = list(csv.DictReader(open(lnm / "qc" / "hub_bias.tsv"), delimiter="\t"))
    assert sum(row["kind"] == "lesion" for row in rows) == 12 and sum(row["kind"] == "group_map" for row in rows) == 9
    summary = list(csv.DictReader(open(lnm / "qc" / "null_summary.tsv"), delimiter="\t"))
    assert [row["group"] for row in summary] == ["all", "A", "B"] and summary[0]["n_null_lesions"] == "120"
    assert not list((lnm / "null" / "stats").glob("*.npy")), "the null lesions' sums are temporary by default"
    assert not (lnm / "null" / "maps").exists()
    percentile = np.asarray(nib.load(str(lnm / "group" / "sensitivity_vs_null.nii.gz")).dataobj)
    assert percentile.min() >= 0 and percentile.max() <= 100


def test_demo_specificity(demo):
    """Group A (parietal and sensorimotor lesions) against group B: some voxels survive FWE
    correction and lie in the cases' sensitivity map."""
    folder = demo / "results" / "lnm" / "specificity"
    p_fwe = np.asarray(nib.load(str(folder / "p_fwe.nii.gz")).dataobj)
    mask = np.asarray(nib.load(str(demo / "resources" / "demo" / "mask.nii.gz")).dataobj) > 0
    assert 0 < (p_fwe[mask] < 0.05).sum() < 100
    assert np.abs(np.asarray(nib.load(str(folder / "conjunction.nii.gz")).dataobj)).sum() > 0
    null = np.loadtxt(folder / "null_max.tsv", delimiter="\t", skiprows=1)
    assert null.shape == (1000, 2)
    design = (folder / "design.tsv").read_text().splitlines()
    assert design[0].split("\t")[:6] == ["lesion_id", "group", "intercept", "case", "volume", "age"]
    assert len(design) == 13


def test_demo_perturbation_outputs(demo):
    import anndata as ad

    latents = ad.read_h5ad(demo / "results" / "cpa" / "latents.h5ad")
    screen = ad.read_h5ad(demo / "resources" / "demo" / "cpa_screen.h5ad", backed="r")
    assert list(latents.obs_names) == list(screen.obs_names)
    assert latents.obsm["X_cpa"].shape == (screen.n_obs, 16)
    metrics = list(csv.DictReader(open(demo / "results" / "cpa" / "metrics.tsv"), delimiter="\t"))
    assert len(metrics) == 18  # 3 held-out combinations x 2 dosages x 3 cell types
    for baseline in ("no_change", "additive", "train_mean"):
        assert all(f"{baseline}_{score}" in metrics[0] for score in ("r2_mean_deg20", "pearson_delta_all", "mae_all",
                                                                    "e_distance", "deg_overlap20", "discrimination"))
    value = lambda rows, key: np.array([float(row[key]) for row in rows])  # noqa: E731
    # The targets of issue 27 on the demo's saturating screen: in every group above no
    # change and train mean; on the combinations whose drugs do not interact, a median at
    # least the additive baseline's (top-20-DEG R^2 and Pearson-delta).
    for row in metrics:
        for baseline in ("no_change", "train_mean"):
            assert float(row["r2_mean_deg20"]) > float(row[f"{baseline}_r2_mean_deg20"]), (baseline, row)
    # (README: 0.923 against 0.919 and 0.662 against 0.547. The R^2 margin is below what
    # another thread count moves it by, so it is compared with a tolerance of 0.02.)
    plain = [row for row in metrics if row["condition"] != "drug04+drug05"]
    assert np.median(value(plain, "r2_mean_deg20")) >= np.median(value(plain, "additive_r2_mean_deg20")) - 0.02
    assert np.median(value(plain, "pearson_delta_all")) > np.median(value(plain, "additive_pearson_delta_all")) + 0.05
    # The synergistic combination: nothing predicts it from its single drugs (both far
    # below the other combinations at "1+1").
    synergy = [row for row in metrics if row["condition"] == "drug04+drug05" and row["dosage"] == "1+1"]
    assert np.median(value(synergy, "additive_r2_mean_deg20")) < np.median(value(plain, "additive_r2_mean_deg20")) - 0.1
    assert np.median(value(synergy, "r2_mean_deg20")) < np.median(value(plain, "r2_mean_deg20")) - 0.05
    # The basal latent at the kept epoch: the condition and the cell type near chance.
    row = metrics[0]
    assert row["selected_epoch"]
    assert float(row["disentanglement_basal"]) < float(row["disentanglement_chance"]) + 0.1
    assert float(row["disentanglement_basal_cell_type"]) < float(row["disentanglement_chance_cell_type"]) + 0.1
    assert len(list((demo / "results" / "cpa" / "counterfactuals").glob("*.h5ad"))) == 2
    embeddings = ad.read_h5ad(demo / "results" / "cpa" / "embeddings.h5ad")
    assert (embeddings.obs["kind"] == "drug").sum() == 10 and (embeddings.obs["kind"] == "cell_type").sum() == 3
    table = (demo / "results" / "cpa" / "dose_response.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["drug", "dose", "cell_type", "gene", "mean", "change"]
    assert len(table) == 1 + 3 * 6 * 3 * 200
    # The demo's query: a lab's control cells, its genes matched by name and "t2" read as type2.
    query = demo / "results" / "cpa" / "query" / "lab_controls"
    lab = ad.read_h5ad(demo / "resources" / "demo" / "cpa_lab_controls.h5ad", backed="r")
    query_latents = ad.read_h5ad(query / "latents.h5ad")
    assert list(query_latents.obs_names) == list(lab.obs_names)
    assert query_latents.obsm["X_cpa_basal"].shape == (lab.n_obs, 16)
    counterfactual = ad.read_h5ad(query / "counterfactuals" / "drug00+drug01_at_1+1.h5ad")
    assert counterfactual.shape == (lab.n_obs, screen.n_vars)
    queries = list(csv.DictReader(open(demo / "results" / "cpa" / "query" / "queries.tsv"), delimiter="\t"))
    assert [(row["query"], row["cells"], row["genes_matched"], row["genes_dropped"]) for row in queries] == [
        ("lab_controls", str(lab.n_obs), "200", "8")]


def test_demo_figures_are_real_images(demo):
    for name in FIGURES:
        data = (demo / name).read_bytes()
        if name.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n", name
            assert len(data) > 20_000, (name, len(data))


def test_report_embeds_every_figure_and_caption(demo):
    html = (demo / "report.html").read_text()
    for name in FIGURES:
        assert Path(name).name in html, f"{name} is not in report.html"
    # every PNG is embedded (base64), plus the captions
    assert html.count("iVBORw0KGgo") >= len([f for f in FIGURES if f.endswith(".png")])
    for caption in ("Sensitivity maps", "adversarial classifiers", "UMAP of the basal latent",
                    "predicted against the observed mean", "Software versions", "The config this run used",
                    "design matrix of the specificity GLM", "cosine similarity between the drugs",
                    "Predicted dose response", "degree map", "random-lesion null", "Hub-bias table"):
        assert caption in html, caption


def front_page(html):
    """The report's front page (workflow/report/workflow.rst as rendered), as HTML."""
    start = html.index("var workflow_desc")
    return html[start:html.index("</script>", start)]


def test_report_renders_every_caption_and_describes_every_part(demo, tmp_path):
    """A report built now from the demo, with the captions of this tree: docutils renders
    every caption and the front page without a system message (in reStructuredText a bare
    |T| is an undefined substitution, shown as a red error box), and the front page names
    each part the demo runs and where its files are."""
    built = tmp_path / "report.html"
    run = subprocess.run(SNAKEMAKE + ["--report", str(built), "--quiet"], cwd=demo, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for path in (built, demo / "report.html"):
        html = path.read_text()
        assert "System Message" not in html and "system-message" not in html, (
            f"{path}: " + html[html.find("System Message") - 500:html.find("System Message") + 300])
    page = front_page(built.read_text())
    parts = {"Lesion network mapping": "lnm/maps/", "Group maps": "lnm/group/", "Hub controls": "lnm/qc/hub_bias.tsv",
             "degree map": "lnm/connectome/degree.nii.gz", "Random-lesion null": "lnm/qc/null_summary.tsv",
             "fingerprint": "lnm/maps/connectome.json", "lists every lesion": "lnm/maps.tsv",
             "Specificity": "lnm/specificity/", "Perturbation model": "cpa/latents.h5ad",
             "held-out conditions": "cpa/metrics.tsv", "Counterfactuals": "cpa/counterfactuals/",
             "dose response": "cpa/dose_response.tsv", "embeddings": "cpa/embeddings.h5ad"}
    for part, where in parts.items():
        assert part in page and where in page, (part, where)
