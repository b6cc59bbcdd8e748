"""A model trained elsewhere applied to query data sets through Snakemake: no training file,
latents and counterfactuals equal to CPA's own in memory, the model folder untouched, and
queries the model cannot read stopped before any task runs the model."""

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import yaml
from scipy import sparse

from shardmap.cpa import CPA
from shardmap.cpa.simulate import simulate_lab_controls, simulate_screen
from projects import snakemake
from synthetic import write_sheet

pytestmark = pytest.mark.workflow
SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control", covariate_keys=["cell_type"])


def folder_checksums(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def write_config(workdir, **cpa):
    config = {"outdir": "out", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "trained_model": "elsewhere/model", "shard_size": 300, "threads": 1, **cpa}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A model trained and saved in a notebook (no workflow), and two query files."""
    workdir = tmp_path_factory.mktemp("cpa-query")
    screen = simulate_screen(n_cells=900, n_genes=30, seed=4)
    del screen.uns["truth"]
    scvi.settings.seed = 0
    fitted = screen.copy()
    CPA.setup_anndata(fitted, **SETUP)
    model = CPA(fitted, n_latent=6, n_hidden=24)
    model.train(max_epochs=2, batch_size=128, accelerator="cpu", seed=0)
    model.save(str(workdir / "elsewhere" / "model"), save_anndata=False)
    lab = simulate_lab_controls(700, 30, seed=4)  # no perturbation column, genes reversed + extra, "t2"
    lab.write_h5ad(workdir / "lab.h5ad")
    part = screen[200:650].copy()  # treated and control cells of the screen itself
    part.write_h5ad(workdir / "part.h5ad")
    return workdir, screen, lab, part


@pytest.fixture(scope="module")
def run(project):
    workdir, *_ = project
    before = folder_checksums(workdir / "elsewhere" / "model")
    write_config(workdir, query=[{"name": "lab", "adata": "lab.h5ad", "covariates": {"cell_type": {"t2": "type2"}}},
                                 {"name": "part", "adata": "part.h5ad"}],
                 counterfactuals=[{"perturbation": "drug00+drug01", "dosage": "1+0.5", "on": "lab"},
                                  {"perturbation": "drug03", "dosage": "2", "on": "part"}])
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, before


def test_no_training_file_and_the_model_folder_untouched(project, run):
    workdir, before = run
    assert folder_checksums(workdir / "elsewhere" / "model") == before
    logs = {path.name for path in (workdir / "out" / "logs" / "cpa").iterdir()}
    assert not {"train.log", "check_inputs.log", "evaluate.log", "merge.log"} & logs
    assert not (workdir / "out" / "cpa" / "model").exists()


def test_embeddings_of_a_model_without_its_training_file(project, run):
    workdir, screen, *_ = project
    model = CPA.load(str(workdir / "elsewhere" / "model"), adata=screen.copy())
    want = model.get_drug_embeddings(dose=1.0)
    embeddings = ad.read_h5ad(workdir / "out" / "cpa" / "embeddings.h5ad")
    drugs = embeddings[embeddings.obs["kind"] == "drug"]
    assert list(drugs.obs["name"]) == list(want.index)
    np.testing.assert_allclose(drugs.X, want.to_numpy(), rtol=1e-6, atol=1e-7)
    assert list(embeddings.obs.loc[embeddings.obs["kind"] == "cell_type", "name"]) == ["type0", "type1", "type2"]


def test_query_latents_equal_the_models_own(project, run):
    workdir, screen, lab, part = project
    model = CPA.load(str(workdir / "elsewhere" / "model"), adata=part.copy())
    want = model.get_latent_representation(part.copy())
    got = ad.read_h5ad(workdir / "out" / "cpa" / "query" / "part" / "latents.h5ad")
    assert list(got.obs_names) == list(part.obs_names)
    for key, obsm in (("z_basal", "X_cpa_basal"), ("z", "X_cpa"), ("z_corrected", "X_cpa_corrected")):
        np.testing.assert_allclose(got.obsm[obsm], want[key], rtol=1e-4, atol=1e-4)
    # The lab's cells as the model reads them: its genes by name, "t2" as type2, all controls.
    aligned = ad.AnnData(lab[:, screen.var_names].X.copy(),
                         pd.DataFrame({"condition": "control", "dose": "0",
                                       "cell_type": lab.obs["cell_type"].astype(str).replace({"t2": "type2"})},
                                      index=lab.obs_names), pd.DataFrame(index=screen.var_names))
    want = model.get_latent_representation(aligned)
    got = ad.read_h5ad(workdir / "out" / "cpa" / "query" / "lab" / "latents.h5ad")
    np.testing.assert_allclose(got.obsm["X_cpa"], want["z"], rtol=1e-4, atol=1e-4)
    assert got.uns["cpa_inference"]["shards"] == 3
    assert got.uns["cpa_inference"]["query"]["genes_dropped"] == "8"
    times = pd.read_csv(workdir / "out" / "cpa" / "query" / "lab" / "inference_times.tsv", sep="\t")
    assert list(times["rows"]) == [300, 300, 100] and (times["seconds"] > 0).all()


def test_counterfactuals_on_query_controls_equal_predict(project, run):
    workdir, screen, lab, part = project
    cf = ad.read_h5ad(workdir / "out" / "cpa" / "query" / "lab" / "counterfactuals" / "drug00+drug01_at_1+0.5.h5ad")
    assert cf.n_obs == lab.n_obs and list(cf.var_names) == list(screen.var_names)
    aligned = ad.AnnData(sparse.csr_matrix(lab[:, screen.var_names].X),
                         pd.DataFrame({"condition": "control", "dose": "0",
                                       "cell_type": lab.obs["cell_type"].astype(str).replace({"t2": "type2"})},
                                      index=lab.obs_names), pd.DataFrame(index=screen.var_names))
    model = CPA.load(str(workdir / "elsewhere" / "model"), adata=aligned)
    want = model.predict(aligned, perturbation="drug00+drug01", dosage="1+0.5")
    np.testing.assert_allclose(cf.X, want, rtol=1e-4, atol=1e-3)
    # A query with the perturbation column: only its control cells are predicted.
    cf = ad.read_h5ad(workdir / "out" / "cpa" / "query" / "part" / "counterfactuals" / "drug03_at_2.h5ad")
    assert list(cf.obs_names) == list(part.obs_names[part.obs["condition"] == "control"])
    table = pd.read_csv(workdir / "out" / "cpa" / "query" / "queries.tsv", sep="\t")
    assert list(table["query"]) == ["lab", "part"]
    assert list(table["cells"]) == [700, 450] and list(table["genes_matched"]) == [30, 30]


def test_queries_the_model_cannot_read_stop_before_inference(project, tmp_path):
    workdir, screen, *_ = project
    missing = screen[:, 3:].copy()
    missing.write_h5ad(workdir / "missing.h5ad")
    # The sheet form of cpa.query, as a spreadsheet exports it.
    write_sheet(workdir / "queries.tsv", ["name", "adata", "missing_genes"], [("few_genes", "missing.h5ad", "")])
    config = {"outdir": "refused", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "trained_model": "elsewhere/model", "query": "queries.tsv"}}
    (workdir / "refuse.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, configfile="refuse.yaml")
    assert result.returncode != 0
    log = (workdir / "refused" / "logs" / "cpa" / "query" / "few_genes" / "check.log").read_text()
    assert "3 of the model's 30 genes are not in the file's var_names (gene0000, gene0001, gene0002)" in log
    assert not (workdir / "refused" / "logs" / "cpa" / "query" / "few_genes" / "infer").exists()
    assert not list((workdir / "refused").rglob("latents.h5ad"))


def test_a_query_without_cells_stops_the_run_before_any_job(project):
    workdir, screen, *_ = project
    screen[:0].copy().write_h5ad(workdir / "empty.h5ad")
    config = {"outdir": "empty", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "trained_model": "elsewhere/model",
                      "query": [{"name": "nothing", "adata": "empty.h5ad"}]}}
    (workdir / "empty.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, configfile="empty.yaml")
    assert result.returncode != 0
    assert "cpa.query 'nothing' ('empty.h5ad') has no cells" in result.stdout + result.stderr
    assert not (workdir / "empty" / "logs" / "cpa").exists()


def test_a_folder_of_another_tool_is_named(project):
    workdir, screen, *_ = project
    small = screen[:200].copy()
    scvi.model.SCVI.setup_anndata(small)
    scvi.model.SCVI(small, n_latent=2, n_hidden=8).save(str(workdir / "scvi_model"), save_anndata=False)
    config = {"outdir": "foreign", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "trained_model": "scvi_model",
                      "query": [{"name": "part", "adata": "part.h5ad"}]}}
    (workdir / "foreign.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, configfile="foreign.yaml")
    assert result.returncode != 0
    log = (workdir / "foreign" / "logs" / "cpa" / "query" / "part" / "check.log").read_text()
    assert "holds a SCVI model saved by scvi-tools" in log and "not a CPA" in log
