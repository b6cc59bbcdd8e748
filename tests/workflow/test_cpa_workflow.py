"""The perturbation arm end to end through Snakemake on a tiny config."""

import subprocess

import anndata as ad
import numpy as np
import pytest

from shardmap.cpa import CPA
from projects import REPO, SNAKEMAKE, write_cpa_project

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cpa-project")
    adata = write_cpa_project(workdir, 1200, 40, 11, shard_size=500,
                              counterfactuals=[{"perturbation": "drug01+drug00", "dosage": "0.5+1"},
                                               {"perturbation": "drug05", "dosage": "1", "name": "d5"}])
    result = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                                         "--configfile", "my.yaml", "--cores", "2"],
                            cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, adata


def test_latents_equal_one_pass_in_input_order(run):
    workdir, adata = run
    latents = ad.read_h5ad(workdir / "out" / "cpa" / "latents.h5ad")
    assert list(latents.obs_names) == list(adata.obs_names)
    assert latents.n_vars == 0 and set(latents.obsm) == {"X_cpa_basal", "X_cpa", "X_cpa_corrected"}
    model = CPA.load(str(workdir / "out" / "cpa" / "model"), adata=adata.copy())
    full = model.get_latent_representation()
    np.testing.assert_allclose(latents.obsm["X_cpa"], full["z"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(latents.obsm["X_cpa_basal"], full["z_basal"], rtol=1e-5, atol=1e-5)
    assert not (workdir / "out" / "cpa" / "shards").exists() or not any((workdir / "out" / "cpa" / "shards").iterdir())
    assert len(list((workdir / "out" / "logs" / "cpa" / "infer").glob("*.log"))) == 3


def test_counterfactuals_and_metrics(run):
    workdir, adata = run
    n_control = int((adata.obs["condition"] == "control").sum())
    cf = ad.read_h5ad(workdir / "out" / "cpa" / "counterfactuals" / "drug01+drug00_at_0.5+1.h5ad")
    assert cf.shape == (n_control, adata.n_vars)
    assert list(cf.var_names) == list(adata.var_names)
    assert (cf.obs["condition"] == "control").all()
    assert np.isfinite(cf.X).all() and (cf.X >= 0).all()
    assert cf.uns["counterfactual"]["perturbation"] == "drug01+drug00"
    assert (workdir / "out" / "cpa" / "counterfactuals" / "d5.h5ad").exists()
    metrics = (workdir / "out" / "cpa" / "metrics.tsv").read_text().splitlines()
    assert metrics[0].split("\t")[:3] == ["condition", "dosage", "covariates"]
    assert {tuple(line.split("\t")[:2]) for line in metrics[1:]} == {("drug00+drug01", "1+1"),
                                                                    ("drug00+drug01", "1+0.5")}
    train_log = (workdir / "out" / "logs" / "cpa" / "train.log").read_text()
    assert "epoch 3/3" in train_log
