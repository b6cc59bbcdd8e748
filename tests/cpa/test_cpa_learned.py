"""What a trained CPA learned, as users read it: drug and covariate embeddings, the scalar
dose responses, and predicted dose-response curves."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

from shardmap.cpa import CPA
from shardmap.cpa.embeddings import cosine_similarity
from shardmap.cpa.simulate import simulate_screen
from shardmap.errors import InputError

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control", covariate_keys=["cell_type"])


@pytest.fixture(scope="module")
def trained():
    adata = simulate_screen(n_cells=2000, n_genes=30, seed=7)
    del adata.uns["truth"]
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP)
    model = CPA(adata, n_latent=8, n_hidden=32)
    model.train(max_epochs=12, batch_size=256, accelerator="cpu", seed=0)
    return model, adata


def logsigm(dose, beta, bias):
    """The logsigm dose response, written out: sigmoid(log1p(dose) beta + b) - sigmoid(b)."""
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    return sigmoid(np.log1p(dose) * beta + bias) - sigmoid(bias)


def test_drug_embeddings_are_the_vectors_scaled_by_the_dose_response(trained):
    model, _ = trained
    weights = model.module.drug_embedding.weight.detach().numpy()
    beta = model.module.doser.beta.detach().numpy().astype(np.float64)
    bias = model.module.doser.bias.detach().numpy().astype(np.float64)
    for dose in (0.0, 0.3, 1.0, 5.0):
        table = model.get_drug_embeddings(dose=dose)
        assert list(table.index) == model.drugs and table.shape == (len(model.drugs), 8)
        expected = weights[:len(model.drugs)] * logsigm(dose, beta, bias)[:len(model.drugs), None]
        np.testing.assert_allclose(table.to_numpy(), expected, rtol=1e-5, atol=1e-7)
    curves = model.get_dose_response(["drug03"], [0.0, 1.0])
    np.testing.assert_allclose(curves["response"], logsigm(np.array([0.0, 1.0]), beta[3], bias[3]), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(InputError, match=r"drug\(s\) \['drugXX'\] are not in the model's vocabulary"):
        model.get_drug_embeddings(drugs=["drug00", "drugXX"])


def test_covariate_embeddings_and_cosine_similarity(trained):
    model, _ = trained
    tables = model.get_covariate_embeddings()
    assert list(tables) == ["cell_type"]
    assert list(tables["cell_type"].index) == ["type0", "type1", "type2"]
    np.testing.assert_array_equal(tables["cell_type"].to_numpy(),
                                  model.module.covariate_embeddings[0].weight.detach().numpy())
    table = pd.DataFrame([[1.0, 0.0], [2.0, 0.0], [0.0, -3.0], [0.0, 0.0]], index=list("abcd"))
    np.testing.assert_allclose(cosine_similarity(table).to_numpy(),
                               [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_dose_response_table(trained):
    model, adata = trained
    doses = [0.0, 0.1, 0.3, 1.0, 3.0]
    table = model.predict_dose_response(["drug02", "drug05"], doses, n_cells=80)
    assert list(table.columns) == ["drug", "dose", "cell_type", "gene", "mean", "change"]
    assert len(table) == 2 * len(doses) * 3 * adata.n_vars
    assert set(table["gene"]) == set(adata.var_names) and set(table["cell_type"]) == {"type0", "type1", "type2"}
    # dose 0 is the control prediction of the same cells
    zero = table[table["dose"] == 0]
    assert zero["change"].abs().max() == 0.0
    controls = np.flatnonzero((adata.obs["condition"] == "control").to_numpy()
                              & (adata.obs["cell_type"] == "type1").to_numpy())
    sampled = np.sort(np.random.default_rng([0, 1]).permutation(controls)[:80])  # type1: the second group
    expected = model.predict(indices=sampled, perturbation="control", library_size=1e4).mean(0)
    got = zero[(zero["drug"] == "drug02") & (zero["cell_type"] == "type1")]["mean"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_monotone_dose_response_gives_monotone_predictions(trained):
    """The simulator's drugs act through a Hill curve of dose; the learned scalar response
    rises with dose, and the most changed genes change monotonically along the grid."""
    model, _ = trained
    doses = [0.0, 0.03, 0.1, 0.3, 1.0, 3.0]
    curves = model.get_dose_response(doses=doses)
    for _, curve in curves.groupby("drug"):
        assert np.all(np.diff(curve.sort_values("dose")["response"].to_numpy()) > 0)
    table = model.predict_dose_response(["drug01"], doses, n_cells=100, covariates=[])
    last = table[table["dose"] == 3.0].set_index("gene")["change"]
    for gene in last.abs().sort_values(ascending=False).index[:5]:
        change = table[table["gene"] == gene].sort_values("dose")["change"].to_numpy()
        steps = np.diff(change) * np.sign(change[-1])
        assert np.all(steps >= -1e-6 * np.abs(change).max()), (gene, change)


def test_embeddings_follow_the_model_to_another_device_shape(trained):
    """The tables are plain NumPy-backed DataFrames, whatever device the module is on."""
    model, _ = trained
    table = model.get_drug_embeddings()
    assert table.to_numpy().dtype == np.float32 and not isinstance(table.to_numpy(), torch.Tensor)
