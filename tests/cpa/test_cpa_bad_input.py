"""Bad perturbation-arm input stops with an error that names the key or value."""

import numpy as np
import pandas as pd
import pytest
import scvi

from shardmap.cpa import CPA
from shardmap.cpa.splits import assign_splits
from shardmap.cpa.tasks.check_inputs import load_and_validate
from shardmap.cpa.tasks.train import train_model
from shardmap.cpa.simulate import simulate_screen
from shardmap.errors import InputError

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control",
             covariate_keys=["cell_type"])
CFG = {**SETUP, "layer": None, "split_key": None, "holdout": [], "model": {"n_latent": 4, "n_hidden": 8},
       "train": {"max_epochs": 1, "batch_size": 64, "seed": 0}}


@pytest.fixture
def screen():
    adata = simulate_screen(n_cells=300, n_genes=20, seed=5)
    del adata.uns["truth"]
    return adata


def with_obs(adata, column, values):
    adata = adata.copy()
    adata.obs[column] = pd.Categorical(values)
    return adata


def test_missing_obs_key(screen):
    with pytest.raises(InputError, match="no column 'drug'"):
        CPA.setup_anndata(screen, **{**SETUP, "perturbation_key": "drug"})
    with pytest.raises(InputError, match="no column 'tissue'"):
        CPA.setup_anndata(screen, **{**SETUP, "covariate_keys": ["tissue"]})


def test_missing_obs_key_in_workflow_validation(screen, tmp_path):
    path = tmp_path / "x.h5ad"
    screen.write_h5ad(path)
    with pytest.raises(InputError, match=r"obs lacks \['tissue'\]"):
        load_and_validate(path, {**CFG, "covariate_keys": ["tissue"]})


def test_dose_with_the_wrong_number_of_parts(screen):
    doses = screen.obs["dose"].astype(str).to_numpy().copy()
    combo = np.flatnonzero(screen.obs["condition"].astype(str).str.contains(r"\+"))[0]
    doses[combo] = "1"
    bad = with_obs(screen, "dose", doses)
    with pytest.raises(InputError, match=r"has 2 drug\(s\) but dosage '1' has 1 part"):
        CPA.setup_anndata(bad, **SETUP)


def test_dose_that_is_not_a_number(screen):
    doses = screen.obs["dose"].astype(str).to_numpy().copy()
    doses[np.flatnonzero(~screen.obs["condition"].astype(str).str.contains(r"\+|control"))[0]] = "high"
    with pytest.raises(InputError, match="'high' is not a number"):
        CPA.setup_anndata(with_obs(screen, "dose", doses), **SETUP)


def test_negative_dose(screen):
    doses = screen.obs["dose"].astype(str).to_numpy().copy()
    doses[np.flatnonzero(~screen.obs["condition"].astype(str).str.contains(r"\+|control"))[0]] = "-1"
    with pytest.raises(InputError, match="must be finite and >= 0"):
        CPA.setup_anndata(with_obs(screen, "dose", doses), **SETUP)


def test_unknown_control_group(screen):
    with pytest.raises(InputError, match="is the control group 'DMSO'"):
        CPA.setup_anndata(screen, **{**SETUP, "control_group": "DMSO"})


@pytest.mark.parametrize("value, fragment", [(-1.0, "negative values"), (0.5, "non-integer values"),
                                             (np.nan, "NaN or Inf")])
def test_counts_that_are_not_counts(screen, value, fragment):
    bad = screen.copy()
    bad.X = bad.X.toarray()
    bad.X[3, 4] = value
    CPA.setup_anndata(bad, **SETUP)
    with pytest.raises(InputError, match=fragment):
        CPA(bad, recon_loss="nb")


def test_nan_with_a_gaussian_likelihood(screen):
    bad = screen.copy()
    bad.X = np.log1p(bad.X.toarray())
    bad.X[7, 2] = np.nan
    CPA.setup_anndata(bad, **SETUP)
    with pytest.raises(InputError, match=r"NaN or Inf \(first at cell 'cell000007', gene column 2\)"):
        CPA(bad, recon_loss="gauss")


def test_gauss_accepts_log_normalised_data(screen):
    data = screen.copy()
    data.X = np.log1p(data.X.toarray())
    CPA.setup_anndata(data, **SETUP)
    CPA(data, recon_loss="gauss", n_latent=4, n_hidden=8)


def test_unknown_drug_in_new_data(screen):
    CPA.setup_anndata(screen, **SETUP)
    model = CPA(screen, n_latent=4, n_hidden=8)
    other = screen.copy()
    conditions = other.obs["condition"].astype(str).to_numpy().copy()
    conditions[np.flatnonzero(~other.obs["condition"].astype(str).str.contains(r"\+|control"))[0]] = "drug99"
    other.obs["condition"] = pd.Categorical(conditions)
    with pytest.raises(InputError, match="drug 'drug99' is not in the model's vocabulary"):
        model.get_latent_representation(other)
    with pytest.raises(InputError, match="drug 'drug77' is not in the model's vocabulary"):
        model.predict(screen, indices=[0], perturbation="drug77", dosage="1")


def test_unknown_category_in_new_data(screen):
    CPA.setup_anndata(screen, **SETUP)
    model = CPA(screen, n_latent=4, n_hidden=8)
    other = with_obs(screen, "cell_type", ["type9"] + list(screen.obs["cell_type"].astype(str))[1:])
    with pytest.raises(InputError, match="value 'type9' that the model was not trained on"):
        model.get_latent_representation(other)


def test_smiles_without_rdkit(screen, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "rdkit", None)  # as if not installed
    data = with_obs(screen, "smiles", ["C" for _ in range(screen.n_obs)])
    CPA.setup_anndata(data, **SETUP, smiles_key="smiles")
    with pytest.raises(InputError, match="RDKit is not installed"):
        CPA(data)


def test_holdout_that_no_cell_has(screen):
    with pytest.raises(InputError, match=r"cpa.holdout names \['drug08\+drug09'\]"):
        assign_splits(screen.obs, {**CFG, "holdout": ["drug09+drug08"]})


def test_holdout_matches_whatever_the_order(screen):
    splits = assign_splits(screen.obs, {**CFG, "holdout": ["drug01+drug00"]})
    held = screen.obs["condition"].astype(str).isin(["drug00+drug01", "drug01+drug00"]).to_numpy()
    assert (splits[held] == "test").all() and (splits[~held] != "test").all()


def test_split_column_with_unknown_labels(screen):
    data = with_obs(screen, "split", ["train"] * (screen.n_obs - 1) + ["holdout"])
    with pytest.raises(InputError, match=r"obs\['split'\] holds \['holdout'\]"):
        assign_splits(data.obs, {**CFG, "split_key": "split"})


def test_missing_values_in_obs(screen, tmp_path):
    data = screen.copy()
    data.obs["cell_type"] = data.obs["cell_type"].astype(object)
    data.obs.iloc[0, data.obs.columns.get_loc("cell_type")] = None
    path = tmp_path / "x.h5ad"
    data.write_h5ad(path)
    with pytest.raises(InputError, match=r"obs\['cell_type'\] has missing values"):
        load_and_validate(path, CFG)


def test_unreadable_or_missing_h5ad(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_and_validate(tmp_path / "none.h5ad", CFG)
    junk = tmp_path / "junk.h5ad"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="cannot be read as .h5ad"):
        load_and_validate(junk, CFG)


def test_failed_training_leaves_no_model(screen, tmp_path):
    path = tmp_path / "x.h5ad"
    bad = screen.copy()
    bad.X = bad.X.toarray() * 0.5
    bad.write_h5ad(path)
    scvi.settings.seed = 0
    with pytest.raises(InputError, match="non-integer"):
        train_model(path, CFG, tmp_path / "model", tmp_path / "splits.tsv", accelerator="cpu")
    assert not (tmp_path / "model").exists() and not (tmp_path / "splits.tsv").exists()
