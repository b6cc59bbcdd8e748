"""Model selection scores how well each covariate can be read from the basal latent, and
the adversaries remove a covariate planted in the expression."""

import numpy as np
import pytest
import scvi
import torch
from sklearn.neighbors import KNeighborsClassifier

from shardmap.cpa import CPA
from shardmap.cpa.selection import selection_score, validation_scores
from shardmap.cpa.simulate import simulate_screen

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control")


def test_selection_score_subtracts_the_mean_covariate_excess():
    # By hand: perturbation (0.6 - 0.2) / 0.8 = 0.5; covariates (0.9 - 0.6) / 0.4 = 0.75,
    # (0.3 - 0.5) below chance = 0 and chance 1 = 0, mean 0.25.
    assert selection_score(0.8, 0.6, 0.2, [(0.9, 0.6), (0.3, 0.5), (1.0, 1.0)]) == pytest.approx(0.8 - 0.5 - 0.25)
    assert selection_score(0.8, 0.6, 0.2, [(0.9, 0.6)]) == pytest.approx(0.8 - 0.5 - 0.75)
    # Without covariates the score is the perturbation's alone, as before.
    assert selection_score(0.8, 0.6, 0.2) == pytest.approx(0.3)
    assert selection_score(0.8, 0.6, 0.2, []) == pytest.approx(0.3)


@pytest.fixture(scope="module")
def screen():
    adata = simulate_screen(n_cells=1500, n_genes=50, seed=0)
    del adata.uns["truth"]
    return adata


def knn_accuracy(latent, labels, seed=0):
    """(accuracy, chance) of sklearn's 15-NN classifier fitted on one random half of the
    cells and scored on the other; chance: the most common label's share there."""
    order = np.random.default_rng(seed).permutation(len(labels))
    fit, held = order[: len(labels) // 2], order[len(labels) // 2:]
    classifier = KNeighborsClassifier(n_neighbors=15).fit(latent[fit], labels[fit])
    _, counts = np.unique(labels[held], return_counts=True)
    return float((classifier.predict(latent[held]) == labels[held]).mean()), counts.max() / held.size


def test_each_covariate_is_scored_under_its_column_name(screen):
    """An untrained model's basal latent is a random map of the expression: the cell type
    (in the expression) is read from it well above chance, a random label is not."""
    adata = screen.copy()
    adata.obs["noise"] = np.random.default_rng(1).choice(["a", "b"], adata.n_obs)
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP, covariate_keys=["cell_type", "noise"])
    scores = validation_scores(CPA(adata, n_latent=8, n_hidden=16), np.arange(adata.n_obs))
    assert scores["disentanglement_basal_cell_type"] > scores["disentanglement_chance_cell_type"] + 0.4
    assert abs(scores["disentanglement_basal_noise"] - scores["disentanglement_chance_noise"]) < 0.08
    assert 0.5 <= scores["disentanglement_chance_noise"] < 0.56
    expected = scores["valid_r2_mean"] - max(0, (scores["disentanglement_basal"] - scores["disentanglement_chance"])
                                             / (1 - scores["disentanglement_chance"]))
    expected -= np.mean([max(0, (scores[f"disentanglement_basal_{k}"] - scores[f"disentanglement_chance_{k}"])
                             / (1 - scores[f"disentanglement_chance_{k}"])) for k in ("cell_type", "noise")])
    assert scores["selection_score"] == pytest.approx(expected)

    plain = screen.copy()
    CPA.setup_anndata(plain, **SETUP)
    keys = set(validation_scores(CPA(plain, n_latent=8, n_hidden=16), np.arange(plain.n_obs)))
    assert keys == {"valid_r2_mean", "disentanglement_basal", "disentanglement_full", "disentanglement_chance",
                    "selection_score"}


@pytest.fixture
def one_thread():
    # Tiny networks train fastest on one thread, and do not slow down when the CI
    # machine's other core is busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EPOCHS = 120


def train_basal(screen, reg_adv):
    """z_basal of every cell and the selection history of a small model trained with
    adversary weight ``reg_adv`` (everything else fixed, same seed)."""
    adata = screen.copy()
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP, covariate_keys=["cell_type"])
    model = CPA(adata, n_latent=4, n_hidden=32)
    cells = np.random.default_rng(0).permutation(adata.n_obs)
    # A strong adversary (10 of its updates per autoencoder update, a higher learning
    # rate); one selection check, after the last epoch, so those weights are kept.
    model.train(max_epochs=EPOCHS, batch_size=128, accelerator="cpu", seed=0, train_indices=cells[300:],
                validation_indices=cells[:300], validation_every=EPOCHS,
                plan_kwargs=dict(reg_adv=reg_adv, adv_steps=11, adv_lr=3e-3))
    return model.get_latent_representation(adata)["z_basal"], model.selection_history["selection"]


def test_adversaries_remove_a_planted_cell_type_from_the_basal_latent(screen, one_thread):
    """The simulated cell types have well separated centres in the latent state behind
    the expression: without adversaries the basal latent keeps them, with them it does not."""
    cell_type = screen.obs["cell_type"].astype(str).to_numpy()
    basal_off, history_off = train_basal(screen, reg_adv=0.0)
    basal_on, history_on = train_basal(screen, reg_adv=50.0)
    accuracy_off, chance = knn_accuracy(basal_off, cell_type)
    accuracy_on, _ = knn_accuracy(basal_on, cell_type)
    assert accuracy_off > chance + 0.4, (accuracy_off, chance)
    assert accuracy_on < chance + 0.15, (accuracy_on, chance)
    # The model selection sees the same on its validation cells.
    off, on = (h["disentanglement_basal_cell_type"][-1] - h["disentanglement_chance_cell_type"][-1]
               for h in (history_off, history_on))
    assert off > 0.4 and on < 0.15, (off, on)
