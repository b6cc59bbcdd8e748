"""cpa.dosage_key: null, as documented: every drug at dose 1, in every task of the
perturbation arm. Two projects differ only in whether the screen has a dose column; with
dosage_key null the column is ignored, so both give the same numbers."""

import subprocess

import anndata as ad
import numpy as np
import pytest

from projects import REPO, SNAKEMAKE, write_cpa_project

pytestmark = pytest.mark.workflow

SETTINGS = {"dosage_key": None, "shard_size": 400,
            "counterfactuals": [{"perturbation": "drug04"}, {"perturbation": "drug01+drug00"}],
            "dose_response": {"drugs": ["drug02"], "doses": [0, 1], "n_cells": 50}}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    folders = {}
    for name in ("without_column", "column_ignored"):
        workdir = tmp_path_factory.mktemp(name)
        write_cpa_project(workdir, 800, 30, 12, **SETTINGS)
        if name == "without_column":
            screen = ad.read_h5ad(workdir / "screen.h5ad")
            del screen.obs["dose"]
            screen.write_h5ad(workdir / "screen.h5ad")
        result = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "my.yaml"],
                                cwd=workdir, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        folders[name] = workdir / "out" / "cpa"
    return folders


def test_every_task_runs_with_every_drug_at_dose_1(projects):
    out = projects["without_column"]
    metrics = (out / "metrics.tsv").read_text().splitlines()
    assert len(metrics) > 1 and {line.split("\t")[1] for line in metrics[1:]} == {"1+1"}
    assert {path.name for path in (out / "counterfactuals").iterdir()} == {"drug04.h5ad", "drug01+drug00.h5ad"}
    assert ad.read_h5ad(out / "counterfactuals" / "drug04.h5ad").uns["counterfactual"]["dosage"] == "None"
    assert (out / "dose_response.tsv").read_text().startswith("drug\tdose\tcell_type\tgene\tmean\tchange\n")
    assert ad.read_h5ad(out / "embeddings.h5ad").n_obs > 0


def test_a_dose_column_is_ignored(projects):
    """The screen with a dose column gives what the screen without one gives, task by task."""
    a, b = projects["without_column"], projects["column_ignored"]
    for name in ("metrics.tsv", "dose_response.tsv", "splits.tsv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    latents_a, latents_b = ad.read_h5ad(a / "latents.h5ad"), ad.read_h5ad(b / "latents.h5ad")
    for key in latents_a.obsm:
        np.testing.assert_array_equal(latents_a.obsm[key], latents_b.obsm[key])
    for name in ("drug04.h5ad", "drug01+drug00.h5ad"):
        np.testing.assert_array_equal(ad.read_h5ad(a / "counterfactuals" / name).X,
                                      ad.read_h5ad(b / "counterfactuals" / name).X)
