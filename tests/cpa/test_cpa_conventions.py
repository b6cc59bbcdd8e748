"""What users bring from scvi-tools and cpa-tools works as there, or says what to write
instead; and the model selection that keeps the best-validation weights."""

import numpy as np
import pytest
import scvi
import torch
from torch import nn

from shardmap.cpa import CPA
from shardmap.cpa import selection as selection_module
from shardmap.cpa.perturbations import OBSM_KEY
from shardmap.cpa.selection import disentanglement, selection_score
from shardmap.cpa.simulate import simulate_screen
from shardmap.errors import InputError

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control")


@pytest.fixture(scope="module")
def screen():
    adata = simulate_screen(n_cells=1200, n_genes=30, seed=5)
    del adata.uns["truth"]
    return adata


def model_of(adata, **setup):
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **{**SETUP, **setup})
    return CPA(adata, n_latent=8, n_hidden=16)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_n_layers_counts_the_hidden_layers(screen, n_layers):
    scvi.settings.seed = 0
    adata = screen.copy()
    CPA.setup_anndata(adata, **SETUP)
    module = CPA(adata, n_latent=8, n_hidden=16, n_layers=n_layers).module
    for stack in (module.encoder, module.decoder):
        linear = [m for m in stack.modules() if isinstance(m, nn.Linear)]
        norms = [m for m in stack.modules() if isinstance(m, nn.BatchNorm1d)]
        assert len(linear) == len(norms) == n_layers  # each hidden layer has its batch norm


def test_categorical_covariate_keys_is_covariate_keys(screen):
    a, b = screen.copy(), screen.copy()
    first = model_of(a, covariate_keys=["cell_type"])
    second = model_of(b, categorical_covariate_keys=["cell_type"])
    assert first.module.covariate_embeddings[0].num_embeddings == second.module.covariate_embeddings[0].num_embeddings
    np.testing.assert_array_equal(a.obsm["_shardmap_cpa_covariates"], b.obsm["_shardmap_cpa_covariates"])
    with pytest.raises(InputError, match="continuous_covariate_keys"):
        CPA.setup_anndata(screen.copy(), **SETUP, continuous_covariate_keys=["age"])


def test_without_a_dose_column_every_drug_is_at_dose_one(screen):
    adata = screen.copy()
    del adata.obs["dose"]
    model_of(adata, dosage_key=None)
    encoded = adata.obsm[OBSM_KEY]
    max_drugs = (encoded.shape[1] - 1) // 2
    drugs, doses = encoded[:, :max_drugs], encoded[:, max_drugs:2 * max_drugs]
    n_drugs = len(model_of(screen.copy()).drugs)
    assert np.all(doses[drugs < n_drugs] == 1.0) and np.all(doses[drugs == n_drugs] == 0.0)


def test_predict_without_a_dosage_is_dose_one_per_drug(screen):
    model = model_of(screen.copy())
    cells = np.arange(50)
    np.testing.assert_array_equal(model.predict(indices=cells, perturbation="drug00+drug01"),
                                  model.predict(indices=cells, perturbation="drug00+drug01", dosage="1+1"))


def test_latents_as_one_array_with_give_mean(screen):
    model = model_of(screen.copy())
    everything = model.get_latent_representation(indices=np.arange(40))
    basal = model.get_latent_representation(indices=np.arange(40), give_mean=True, representation="z_basal")
    np.testing.assert_array_equal(basal, everything["z_basal"])
    with pytest.raises(InputError, match="representation 'latent' is not one of"):
        model.get_latent_representation(representation="latent")


def test_early_stopping_uses_the_selection_score(screen):
    model = model_of(screen.copy(), covariate_keys=["cell_type"])
    with pytest.raises(InputError, match="early_stopping_monitor.*selection score"):
        model.train(max_epochs=2, accelerator="cpu", early_stopping=True, early_stopping_monitor="elbo_validation")
    model.train(max_epochs=12, batch_size=256, accelerator="cpu", early_stopping=True, early_stopping_patience=2,
                validation_every=1)
    history = model.selection_history
    epochs, scores = history["selection"]["epoch"], history["selection"]["selection_score"]
    best = epochs[int(np.argmax(scores))]
    assert history["selected_epoch"] == best
    assert epochs[-1] == 12 or epochs[-1] == best + 2  # stopped two checks after the best, or at the cap


# ---- model selection -------------------------------------------------------------------

def test_disentanglement_is_at_chance_without_signal_and_high_with_it():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    noise = rng.normal(size=(2000, 8))
    accuracy, chance = disentanglement(noise, labels)
    assert abs(accuracy - chance) < 0.06 and 0.2 < chance < 0.32
    informative = noise + 3.0 * np.eye(8)[labels]
    accuracy, _ = disentanglement(informative, labels)
    assert accuracy > 0.9
    assert selection_score(0.8, chance, chance) == 0.8 and selection_score(0.8, 1.0, chance) == pytest.approx(-0.2)


def test_the_kept_weights_are_the_best_check_not_the_last(screen, monkeypatch):
    """A planted sequence of validation scores that peaks at epoch 4 of 8: the model ends
    with exactly the weights it had after epoch 4."""
    planted = {2: 0.1, 4: 0.9, 6: 0.5, 8: 0.3}
    snapshots = {}

    def fake_scores(model, indices, batch_size=4096, seed=0):
        epoch = fake_scores.epoch = getattr(fake_scores, "epoch", 0) + 2
        snapshots[epoch] = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
        return {"valid_r2_mean": planted[epoch], "disentanglement_basal": 0.2, "disentanglement_full": 0.5,
                "disentanglement_chance": 0.2, "selection_score": planted[epoch]}

    monkeypatch.setattr(selection_module, "validation_scores", fake_scores)
    model = model_of(screen.copy())
    model.train(max_epochs=8, batch_size=128, accelerator="cpu", validation_every=2)
    assert model.selection_history["selected_epoch"] == 4
    final = model.module.state_dict()
    for key, value in snapshots[4].items():
        assert torch.equal(final[key], value), key
    assert not all(torch.equal(final[k], v) for k, v in snapshots[8].items())


def test_the_kept_model_scores_what_was_recorded(screen):
    model = model_of(screen.copy(), covariate_keys=["cell_type"])
    rng = np.random.default_rng(1)
    cells = rng.permutation(screen.n_obs)
    valid = cells[:300]
    model.train(max_epochs=9, batch_size=128, accelerator="cpu", train_indices=cells[300:], validation_indices=valid,
                validation_every=3)
    history = model.selection_history
    best = int(np.argmax(history["selection"]["selection_score"]))
    again = selection_module.validation_scores(model, valid)
    assert again["selection_score"] == pytest.approx(history["selection"]["selection_score"][best], abs=1e-6)


def test_early_stopping_without_validation_cells_says_so(screen):
    model = model_of(screen.copy())
    with pytest.raises(InputError, match="early_stopping needs validation cells"):
        model.train(max_epochs=2, accelerator="cpu", train_size=1.0, early_stopping=True)
    model.train(max_epochs=1, batch_size=256, accelerator="cpu", train_size=1.0)  # keep_best needs none
    assert model.selection_history == {"selection": {}, "selected_epoch": None}
