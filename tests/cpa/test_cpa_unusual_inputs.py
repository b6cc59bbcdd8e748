"""Screens as other tools write them: numeric dose columns (missing for control cells),
numeric covariates, spaces around '+', unused categories, dense integer or float counts,
repeated cell names. Each passes the check and gives the conditions its plain copy gives,
by the rules the README states."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from shardmap.cpa import CPA
from shardmap.cpa.conditions import canonical_conditions
from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.check_inputs import check_inputs

CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None, "split_key": None, "holdout": ["drug00+drug01"],
       "model": {"recon_loss": "nb"}, "train": {"seed": 0}, "counterfactuals": []}


@pytest.fixture(scope="module")
def screen():
    adata = simulate_screen(n_cells=300, n_genes=20, seed=5)
    del adata.uns["truth"]
    return adata


def check(tmp_path, adata, cfg=None):
    adata.write_h5ad(tmp_path / "screen.h5ad")
    return check_inputs(tmp_path / "screen.h5ad", {**CFG, **(cfg or {})}, tmp_path / "adata.tsv")


def test_a_numeric_dose_column_missing_for_control_cells(tmp_path, screen):
    singles = screen[~screen.obs["condition"].astype(str).str.contains(r"\+").to_numpy()].copy()
    singles.obs["dose"] = pd.to_numeric(singles.obs["dose"].astype(str))
    singles.obs.loc[singles.obs["condition"] == "control", "dose"] = np.nan
    summary = check(tmp_path, singles, {"holdout": []})
    assert summary["cells"] == singles.n_obs
    conditions, dosages = canonical_conditions(singles.obs, CFG)
    assert set(dosages[conditions == "control"]) == {""} and "nan" not in set(dosages)
    CPA.setup_anndata(singles, perturbation_key="condition", dosage_key="dose", control_group="control")


def test_numeric_covariates_unused_categories_and_spaces_around_plus(tmp_path, screen):
    data = screen.copy()
    data.obs["cell_type"] = data.obs["cell_type"].cat.codes.astype(int)
    spaced = data.obs["condition"].astype(str).str.replace("+", " + ", regex=False)
    data.obs["condition"] = pd.Categorical(spaced, categories=sorted(set(spaced)) + ["never_used"])
    assert check(tmp_path, data)["test_cells"] == check(tmp_path, screen)["test_cells"]
    np.testing.assert_array_equal(canonical_conditions(data.obs, CFG)[0], canonical_conditions(screen.obs, CFG)[0])
    CPA.setup_anndata(data, perturbation_key="condition", dosage_key="dose", control_group="control",
                      covariate_keys=["cell_type"])
    CPA(data, n_latent=4, n_hidden=8)


@pytest.mark.parametrize("storage", [np.int64, np.float32, "csr_int32"])
def test_counts_stored_as_integers_or_floats_dense_or_sparse(tmp_path, screen, storage):
    data = screen.copy()
    dense = np.asarray(data.X.todense() if sparse.issparse(data.X) else data.X)
    data.X = sparse.csr_matrix(dense.astype(np.int32)) if storage == "csr_int32" else dense.astype(storage)
    assert check(tmp_path, data)["genes"] == 20


def test_repeated_cell_names_pass_by_position(tmp_path, screen):
    """Cell names are carried along as they are (obs is copied into the outputs); every
    task addresses rows by position, so repeated names are allowed."""
    data = screen.copy()
    data.obs_names = ["cell"] * data.n_obs
    assert check(tmp_path, data)["cells"] == data.n_obs


def test_covariate_keys_not_in_alphabetical_order(tmp_path, screen):
    """covariate_keys ["well", "cell_type"] (two and three categories): the code columns,
    the embeddings' sizes and names follow the order given, in training, in
    get_covariate_embeddings and in the inference tasks' model (the registry keeps the
    categories in a dict that may come back sorted by key)."""
    import scvi

    from shardmap.cpa.inference_model import InferenceModel

    adata = screen.copy()
    adata.obs["well"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "w1", "w2"))
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, perturbation_key="condition", dosage_key="dose", control_group="control",
                      covariate_keys=["well", "cell_type"])
    model = CPA(adata, n_latent=4, n_hidden=8)
    model.train(max_epochs=1, batch_size=128, accelerator="cpu", seed=0)
    sizes = [embedding.num_embeddings for embedding in model.module.covariate_embeddings]
    assert sizes == [2, 3]
    tables = model.get_covariate_embeddings()
    assert list(tables["well"].index) == ["w1", "w2"]
    assert list(tables["cell_type"].index) == ["type0", "type1", "type2"]
    np.testing.assert_array_equal(tables["cell_type"].to_numpy(),
                                  model.module.covariate_embeddings[1].weight.detach().numpy())
    model.save(tmp_path / "model")
    loaded = InferenceModel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.network.covariate_embeddings[0].weight.detach().numpy(),
                                  model.module.covariate_embeddings[0].weight.detach().numpy())
