"""Model selection while CPA trains: validation scores every few epochs, the best weights
kept, early stopping.

Every ``every_n_epochs`` epochs (and after the last) the validation cells are run through
the model and two things are measured:

* **reconstruction**: R^2 between the predicted and the observed mean expression of each
  condition (with at least ``MIN_CELLS`` validation cells), averaged over conditions;
* **disentanglement**: how well a k-nearest-neighbour classifier tells a cell's condition
  from its *basal* latent (which should carry no perturbation): its accuracy on half of the
  validation cells after fitting the other half, against the chance level (the share of
  the most common condition). The same classifier on the full latent shows the signal the
  perturbation embedding adds. The basal latent should carry no covariate either: the same
  classifier of each covariate the model was set up with (e.g. cell type) is recorded as
  ``disentanglement_basal_<column>`` with its chance level ``disentanglement_chance_<column>``.

The **selection score** is the reconstruction R^2 minus each basal classifier's accuracy
above chance, scaled to [0, 1] (``excess = max(0, (accuracy - chance) / (1 - chance))``):
``r2 - excess(perturbation) - mean over covariates of excess(covariate)``. The weights of
the epoch with the highest score are kept (restored when training ends), and with early
stopping training ends after ``patience`` checks without a better score.
"""

from __future__ import annotations

import copy
import logging

import lightning.pytorch as pl
import numpy as np
import torch

from .scores import r_squared

log = logging.getLogger(__name__)

MIN_CELLS = 10  # conditions with fewer validation cells are left out of the R^2
N_NEIGHBORS = 15
# Prefixes of the scores of each covariate, followed by its obs column name.
BASAL = "disentanglement_basal_"
CHANCE = "disentanglement_chance_"


def disentanglement_keys(covariate_keys=()):
    """The names of the disentanglement scores of a check: the perturbation's accuracy and
    chance, then each covariate's (as ``validation_scores`` records them)."""
    return ["disentanglement_basal", "disentanglement_chance"] + [
        prefix + key for key in covariate_keys for prefix in (BASAL, CHANCE)]


def disentanglement(latent, labels, seed=0, n_neighbors=N_NEIGHBORS):
    """(accuracy, chance) of a k-nearest-neighbour classifier of ``labels`` from ``latent``:
    fitted on a random half of the cells, scored on the other half; chance is the share of
    the most common label among the scored cells."""
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(labels.size)
    fit, score = order[: labels.size // 2], order[labels.size // 2:]
    if fit.size == 0 or score.size == 0:
        return float("nan"), float("nan")
    classifier = KNeighborsClassifier(n_neighbors=min(n_neighbors, fit.size)).fit(latent[fit], labels[fit])
    accuracy = float((classifier.predict(latent[score]) == labels[score]).mean())
    _, counts = np.unique(labels[score], return_counts=True)
    return accuracy, float(counts.max() / score.size)


def excess_accuracy(accuracy, chance):
    """A classifier's accuracy above chance scaled to [0, 1] (1: perfect); 0 at or below
    chance, and for a label with a single value (chance 1)."""
    return 0.0 if chance >= 1 else max(0.0, (accuracy - chance) / (1.0 - chance))


def selection_score(r2, accuracy, chance, covariates=()):
    """The reconstruction R^2 minus the excess accuracy of the basal latent's perturbation
    classifier (``accuracy``, ``chance``) and the mean excess accuracy of its covariate
    classifiers (``covariates``: (accuracy, chance) pairs; none costs nothing)."""
    covariate_cost = float(np.mean([excess_accuracy(a, c) for a, c in covariates])) if len(covariates) else 0.0
    return r2 - excess_accuracy(accuracy, chance) - covariate_cost


def covariate_keys(model):
    """The obs columns of the covariates ``model`` was set up with, in the order of the
    columns of its covariate codes (none when it has no covariates)."""
    # The setup arguments, not the registry's categories: that dict comes back with its
    # keys sorted, while the code columns follow covariate_keys as given.
    return list(model.adata_manager._registry["setup_args"].get("covariate_keys") or [])


@torch.inference_mode()
def validation_scores(model, indices, batch_size=4096, seed=0):
    """The selection scores of ``model`` on the cells ``indices`` of its training AnnData."""
    from .codes import COVARIATES_KEY, PERTURBATION_KEY, split_encoded

    keys = covariate_keys(model)
    module = model.module
    was_training = module.training
    module.eval()
    loader = model._make_data_loader(adata=model.adata, indices=indices, batch_size=batch_size, shuffle=False)
    basal, full, classes, covariates, predicted, observed = [], [], [], [], [], []
    try:
        for tensors in loader:
            inputs = module._get_inference_input(tensors)
            result = module.inference(**inputs, sample=False)
            mean = module.generative(result["z"], result["library"])["mean"]
            basal.append(result["z_basal"].cpu().numpy())
            full.append(result["z"].cpu().numpy())
            classes.append(split_encoded(tensors[PERTURBATION_KEY])[2].cpu().numpy())
            if keys:
                covariates.append(tensors[COVARIATES_KEY].cpu().numpy())
            predicted.append(mean.cpu().numpy())
            observed.append(tensors["X"].cpu().numpy())
    finally:
        module.train(was_training)
    basal, full, classes = np.concatenate(basal), np.concatenate(full), np.concatenate(classes)
    predicted, observed = np.concatenate(predicted), np.concatenate(observed)
    r2s = [r_squared(predicted[classes == c].mean(0), observed[classes == c].mean(0))
           for c in np.unique(classes) if (classes == c).sum() >= MIN_CELLS]
    r2s = [value for value in r2s if np.isfinite(value)]
    accuracy, chance = disentanglement(basal, classes, seed)
    full_accuracy, _ = disentanglement(full, classes, seed)
    r2 = float(np.mean(r2s)) if r2s else float("nan")
    scores = {"valid_r2_mean": r2, "disentanglement_basal": accuracy, "disentanglement_full": full_accuracy,
              "disentanglement_chance": chance}
    pairs = []
    if keys:
        codes = np.concatenate(covariates)
        for column, key in enumerate(keys):
            pairs.append(disentanglement(basal, codes[:, column].astype(np.int64), seed))
            scores[BASAL + key], scores[CHANCE + key] = pairs[-1]
    scores["selection_score"] = selection_score(r2, accuracy, chance, pairs)
    return scores


class ModelSelection(pl.Callback):
    """Scores the model on the validation cells every ``every_n_epochs`` epochs, keeps the
    best weights (restored at the end of training) and, with ``patience``, stops training
    after that many checks without a better score."""

    def __init__(self, model, validation_indices, every_n_epochs=5, patience=None, seed=0):
        super().__init__()
        self.model = model
        self.indices = np.asarray(validation_indices, dtype=np.int64)
        self.every = max(1, int(every_n_epochs))
        self.patience = None if patience is None else max(1, int(patience))
        self.seed = seed
        self.records = []
        self.best_score = -np.inf
        self.best_epoch = None
        self._best_state = None
        self._checks_since_best = 0

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch < trainer.max_epochs:
            return
        scores = validation_scores(self.model, self.indices, seed=self.seed)
        self.records.append({"epoch": epoch, **scores})
        covariates = "".join(f", basal {key[len(BASAL):]} classifier {value:.3f} (chance "
                             f"{scores[CHANCE + key[len(BASAL):]]:.3f})"
                             for key, value in scores.items() if key.startswith(BASAL))
        log.info("epoch %d validation: R^2 %.4f, basal condition classifier %.3f (chance %.3f, full latent %.3f)%s, "
                 "selection score %.4f", epoch, scores["valid_r2_mean"], scores["disentanglement_basal"],
                 scores["disentanglement_chance"], scores["disentanglement_full"], covariates,
                 scores["selection_score"])
        score = scores["selection_score"]
        if np.isfinite(score) and score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self._best_state = copy.deepcopy({k: v.detach().cpu() for k, v in pl_module.module.state_dict().items()})
            self._checks_since_best = 0
        else:
            self._checks_since_best += 1
            if self.patience is not None and self._checks_since_best >= self.patience:
                log.info("early stopping after epoch %d: no better selection score for %d checks (best %.4f at "
                         "epoch %d)", epoch, self.patience, self.best_score, self.best_epoch)
                trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        if self._best_state is not None:
            pl_module.module.load_state_dict(self._best_state)
            log.info("kept the weights of epoch %s (selection score %.4f)", self.best_epoch, self.best_score)

    def history(self):
        """The checks as columns (epoch and each score), and the kept epoch."""
        columns = {key: [record[key] for record in self.records] for key in (self.records[0] if self.records else {})}
        return {"selection": columns, "selected_epoch": self.best_epoch}
