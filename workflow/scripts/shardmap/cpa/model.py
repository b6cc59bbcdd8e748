"""The user-facing CPA model class (scvi-tools style: setup_anndata, train, save/load)."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from ..errors import InputError
from . import cpa_tools_names
from .categories import CategoricalCodesField, n_categories
from .codes import BATCH_KEY, COVARIATES_KEY, PERTURBATION_KEY, encode_override
from .module import CPAModule
from .network import DOSERS, LATENT_KEYS, RECON_LOSSES
from .perturbations import PerturbationField
from .selection import ModelSelection
from .splits import MIN_SELECTION_CELLS
from .training import CPATrainingPlan
from .values import check_values

log = logging.getLogger(__name__)
# setup_anndata passes these on to scvi-tools' AnnDataManager.register_fields.
REGISTER_KWARGS = {"source_registry", "extend_categories", "allow_missing_labels"}
# Inference logs "batches i/N" at most this often (seconds), and always after the last batch.
PROGRESS_EVERY_S = 30.0


def morgan_fingerprints(smiles_by_drug, drugs, n_bits=1024, radius=2):
    """Morgan fingerprints of each drug (RDKit, an optional dependency)."""
    require_rdkit()
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    table = np.zeros((len(drugs), n_bits), dtype=np.float32)
    for i, drug in enumerate(drugs):
        molecule = Chem.MolFromSmiles(smiles_by_drug[drug])
        if molecule is None:
            raise InputError(f"SMILES '{smiles_by_drug[drug]}' of drug '{drug}' cannot be parsed by RDKit; "
                             "fix it in the smiles_key column or set smiles_key: null.")
        table[i] = generator.GetFingerprintAsNumPy(molecule)
    return table


def smiles_of_drugs(obs, perturbation_key, smiles_key, control_group):
    """Map each drug to its SMILES from a column aligned with the condition strings."""
    if smiles_key not in obs:
        raise InputError(f"obs has no column '{smiles_key}' (smiles_key); name an existing column or "
                         "set smiles_key: null.")
    mapping = {}
    pairs = obs[[perturbation_key, smiles_key]].astype(str).drop_duplicates()
    for condition, smiles in pairs.itertuples(index=False):
        if condition == control_group:
            continue
        drugs, codes = condition.split("+"), smiles.split("+")
        if len(drugs) != len(codes):
            raise InputError(f"obs['{smiles_key}'] '{smiles}' has {len(codes)} part(s) for condition "
                             f"'{condition}' with {len(drugs)} drug(s); give one SMILES per drug, joined "
                             "by '+' in the order of the drugs.")
        for drug, code in zip(drugs, codes):
            if mapping.setdefault(drug.strip(), code.strip()) != code.strip():
                raise InputError(f"drug '{drug}' has two SMILES in obs['{smiles_key}']; give each drug "
                                 "one SMILES throughout.")
    return mapping


def require_rdkit():
    try:
        import rdkit  # noqa: F401
    except ImportError as err:
        raise InputError("smiles_key is set but RDKit is not installed; install the optional "
                         "dependency (pip install rdkit) or set smiles_key: null.") from err


class Latents(dict):
    """The latents ``CPA.get_latent_representation`` returns: a dict of (cells x n_latent)
    arrays. A missing key raises KeyError saying what it is called here (cpa-tools' keys
    latent_basal, latent_after and latent_corrected are z_basal, z and z_corrected)."""

    def __missing__(self, key):
        raise KeyError(cpa_tools_names.latent_key_message(key, list(self)))


class CPA(BaseModelClass):
    """Compositional Perturbation Autoencoder.

    Parameters
    ----------
    adata : AnnData registered with :meth:`setup_anndata`.
    n_latent : size of the latent space.
    recon_loss : "nb", "zinb" (counts) or "gauss" (log-normalised data).
    doser_type : dose-response curve, "logsigm", "sigm", "linear" or "mlp".
    variational : a Gaussian posterior on the basal state (with KL warm-up).
    n_hidden, n_layers, dropout : encoder and decoder sizes.

    cpa-tools' names (``n_hidden_encoder``, ``split_key``, ``custom_predict`` ...) get a
    message saying what they are called here (``shardmap.cpa.cpa_tools_names``).
    """

    _module_cls = CPAModule
    _training_plan_cls = CPATrainingPlan

    def __init__(self, adata, n_latent=64, recon_loss="nb", doser_type="logsigm", variational=False,
                 n_hidden=256, n_layers=2, dropout=0.0, drug_fingerprints=None, **kwargs):
        cpa_tools_names.check_keywords("CPA()", kwargs, cpa_tools_names.INIT,
                                       cpa_tools_names.parameters_of(CPA.__init__))
        del kwargs  # empty: kept out of the saved init parameters, which CPA.load replays
        super().__init__(adata)
        if recon_loss not in RECON_LOSSES:
            raise InputError(f"recon_loss '{recon_loss}' is not one of {RECON_LOSSES}.")
        if doser_type not in DOSERS:
            raise InputError(f"doser_type '{doser_type}' is not one of {DOSERS}.")
        state = self.adata_manager.get_state_registry(PERTURBATION_KEY)
        fields = self.adata_manager.data_registry
        n_cats = (n_categories(self.adata_manager.get_state_registry(COVARIATES_KEY),
                               self.adata_manager._registry["setup_args"].get("covariate_keys"))
                  if COVARIATES_KEY in fields else [])
        n_batch = n_categories(self.adata_manager.get_state_registry(BATCH_KEY))[0]
        check_values(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), recon_loss in ("nb", "zinb"),
                     where=f"the expression matrix ({self._layer_name()})", obs_names=adata.obs_names)
        smiles_key = self.adata_manager._registry["setup_args"].get("smiles_key")
        if smiles_key and drug_fingerprints is None:
            # Computed once, from the training data, and kept in the saved init parameters:
            # loading the model later needs neither RDKit nor every drug in the new data.
            require_rdkit()
            setup = self.adata_manager._registry["setup_args"]
            drug_fingerprints = morgan_fingerprints(
                smiles_of_drugs(adata.obs, setup["perturbation_key"], smiles_key, setup["control_group"]),
                state["drugs"])
        fingerprints = drug_fingerprints
        self.module = CPAModule(
            n_genes=self.summary_stats.n_vars, n_drugs=len(state["drugs"]),
            n_conditions=len(state["conditions"]), n_cats_per_cov=n_cats,
            n_batch=n_batch, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers,
            dropout=dropout, recon_loss=recon_loss, doser_type=doser_type, variational=variational,
            drug_fingerprints=fingerprints, condition_weights=self._condition_weights(len(state["conditions"])))
        self._model_summary_string = (
            f"CPA: {len(state['drugs'])} drugs, {len(state['conditions'])} condition classes, n_latent "
            f"{n_latent}, recon_loss {recon_loss}, doser {doser_type}, variational {variational}")
        self.init_params_ = self._get_init_params(locals())

    def __getattr__(self, name):
        """Called only when normal lookup fails: cpa-tools' method names get an
        AttributeError naming ours (hasattr stays False); any other name the usual one."""
        message = cpa_tools_names.METHODS.get(name)
        if message is not None:
            raise AttributeError(message)
        if any(name in vars(klass) for klass in type(self).__mro__):
            # A property of the class raised AttributeError itself: raise its own error again.
            return object.__getattribute__(self, name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def _layer_name(self):
        layer = self.adata_manager._registry["setup_args"].get("layer")
        return f"layers['{layer}']" if layer else "X"

    def _condition_weights(self, n_classes):
        """Inverse-frequency weights of the condition classes (balanced cross-entropy)."""
        encoded = self.adata_manager.get_from_registry(PERTURBATION_KEY)
        classes = encoded[:, -1].astype(np.int64)
        counts = np.bincount(classes[classes >= 0], minlength=n_classes).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
        return np.minimum(weights, 100.0)

    @classmethod
    def setup_anndata(cls, adata, perturbation_key, dosage_key, control_group, covariate_keys=None,
                      batch_key=None, smiles_key=None, layer=None, categorical_covariate_keys=None, **kwargs):
        """Register the fields CPA needs.

        Parameters
        ----------
        perturbation_key : obs column of condition strings ("drugA+drugB"; the control group).
        dosage_key : obs column of dosage strings ("0.1+1.0"), one dose per drug, same order;
            None puts every drug at dose 1 (as cpa-tools does without a dose column).
        control_group : the condition label of unperturbed cells.
        covariate_keys : obs columns of categorical covariates (e.g. cell type);
            ``categorical_covariate_keys``, the scvi-tools name, is the same thing.
        batch_key : obs column of the technical batch (left out of ``z_corrected``).
        smiles_key : obs column of SMILES strings aligned with the conditions (needs RDKit).
        layer : layer holding the expression (default X).
        """
        if categorical_covariate_keys is not None:
            if covariate_keys is not None and list(covariate_keys) != list(categorical_covariate_keys):
                raise InputError("setup_anndata got both covariate_keys and categorical_covariate_keys (its "
                                 "scvi-tools name) with different columns; give one of them.")
            covariate_keys, categorical_covariate_keys = categorical_covariate_keys, None
        # Recorded in the registry (and replayed by CPA.load): before any other local exists.
        setup_method_args = cls._get_setup_method_args(**locals())
        unknown = sorted(set(kwargs) - REGISTER_KWARGS)
        if any(name in cpa_tools_names.SETUP_ANNDATA for name in unknown):
            cpa_tools_names.check_keywords("setup_anndata", unknown, cpa_tools_names.SETUP_ANNDATA,
                                           cpa_tools_names.parameters_of(cls.setup_anndata) + sorted(REGISTER_KWARGS))
        if unknown:
            raise cpa_tools_names.KeywordError(
                f"setup_anndata has no argument(s) {unknown}; CPA registers perturbation_key, dosage_key, "
                "control_group, covariate_keys (categorical, alias categorical_covariate_keys), batch_key, "
                "smiles_key and layer. Continuous covariates are not modelled: bin them into categories.")
        covariate_keys = list(covariate_keys or [])
        for key in covariate_keys + ([batch_key] if batch_key else []):
            if key not in adata.obs:
                raise InputError(f"adata.obs has no column '{key}' (covariate_keys / batch_key); "
                                 f"columns: {list(adata.obs.columns)}.")
        if layer is not None and layer not in adata.layers:
            raise InputError(f"adata has no layer '{layer}'; layers: {list(adata.layers)}.")
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            PerturbationField(perturbation_key, dosage_key, control_group),
            CategoricalCodesField(BATCH_KEY, [batch_key] if batch_key else [], "_shardmap_cpa_batch",
                                  single_category="all"),
            CategoricalCodesField(COVARIATES_KEY, covariate_keys, "_shardmap_cpa_covariates"),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    # --- training ------------------------------------------------------------------
    def train(self, max_epochs=100, batch_size=512, accelerator="auto", devices="auto",
              train_indices=None, validation_indices=None, train_size=0.9, seed=None, num_workers=0,
              prefetch_factor=2, persistent_workers=False, plan_kwargs=None, early_stopping=False,
              early_stopping_patience=5, validation_every=5, keep_best=True, **trainer_kwargs):
        """Train the model.

        ``train_indices`` / ``validation_indices`` fix the split (the workflow passes its
        train / valid split); otherwise a random ``train_size`` split. DataLoader workers
        (``num_workers`` > 0, with ``prefetch_factor`` and ``persistent_workers``) only
        read data: minibatch order is drawn in the main process, so results do not depend
        on the number of workers.

        Model selection (``shardmap.cpa.selection``): every ``validation_every`` epochs the
        validation cells are scored (reconstruction R^2 per condition, and how well the
        basal latent predicts the condition, which it should not); with ``keep_best`` the
        weights of the best-scoring check are restored at the end, and with
        ``early_stopping`` training stops after ``early_stopping_patience`` checks without a
        better score (``max_epochs`` stays the cap). The checks and the kept epoch are in
        ``self.selection_history``.

        Other keyword arguments go to Lightning's Trainer; cpa-tools' ``use_gpu``,
        ``save_path``, ``validation_size`` and ``hyperopt`` (and cpa-tools' names in
        ``plan_kwargs``) get a message saying what to write here.
        """
        cpa_tools_names.check_keywords("train()", trainer_kwargs, cpa_tools_names.TRAIN)
        cpa_tools_names.check_keywords("train(plan_kwargs=...)", plan_kwargs or {}, cpa_tools_names.PLAN)
        seed = 0 if seed is None else int(seed)
        for key in [k for k in trainer_kwargs if k.startswith("early_stopping_")]:
            raise InputError(f"train() got {key}; CPA stops early on its own selection score (see "
                             "shardmap.cpa.selection), set by early_stopping, early_stopping_patience and "
                             "validation_every.")
        import scvi

        scvi.settings.seed = seed
        # The loaders' base seed comes from their own generator and each training step
        # reseeds itself, so the number of workers cannot change the random streams.
        loader_kwargs = {"num_workers": int(num_workers), "persistent_workers": bool(persistent_workers)
                         and num_workers > 0, "generator": torch.Generator().manual_seed(seed)}
        if num_workers > 0:
            loader_kwargs["prefetch_factor"] = int(prefetch_factor)
        external = None
        n_train = int(round(train_size * self.adata.n_obs))
        if train_indices is not None:
            train = np.asarray(train_indices, dtype=np.int64)
            valid = np.asarray(validation_indices if validation_indices is not None else [], dtype=np.int64)
            rest = np.setdiff1d(np.arange(self.adata.n_obs), np.union1d(train, valid))
            external = [train, valid, rest]
            n_train = train.size
        # A last minibatch of one cell breaks batch normalisation: drop it.
        loader_kwargs["drop_last"] = n_train > batch_size and n_train % batch_size == 1
        splitter = DataSplitter(self.adata_manager, train_size=train_size, batch_size=batch_size,
                                external_indexing=external, **loader_kwargs)
        plan = CPATrainingPlan(self.module, **{"seed": seed, **(plan_kwargs or {})})
        trainer_kwargs.setdefault("enable_progress_bar", False)
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        selection = None
        if external is not None:
            valid_cells = external[1]
        else:
            splitter.setup()
            valid_cells = np.asarray(splitter.val_idx if splitter.val_idx is not None else [], dtype=np.int64)
        if valid_cells.size == 0:
            trainer_kwargs["limit_val_batches"] = 0  # no validation loader to ask for
        if keep_best or early_stopping:
            if valid_cells.size < MIN_SELECTION_CELLS:
                if early_stopping:
                    raise InputError(f"early_stopping needs validation cells to score the model, but there are "
                                     f"{valid_cells.size}; give validation_indices or a train_size below 1.")
            else:
                selection = ModelSelection(self, valid_cells, validation_every,
                                           early_stopping_patience if early_stopping else None, seed)
                trainer_kwargs["callbacks"] = list(trainer_kwargs.get("callbacks") or []) + [selection]
        runner = TrainRunner(self, training_plan=plan, data_splitter=splitter, max_epochs=max_epochs,
                             accelerator=accelerator, devices=devices, **trainer_kwargs)
        result = runner()
        self.selection_history = selection.history() if selection is not None else {"selection": {},
                                                                                     "selected_epoch": None}
        return result

    # --- inference -----------------------------------------------------------------
    def _selection(self, adata, indices):
        """The registered AnnData and the selected row indices."""
        adata = self._validate_anndata(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices, dtype=np.int64)
        return adata, indices

    def _eval_batches(self, adata, indices, batch_size, what="inference"):
        """Yield (start, stop, inference inputs) over the selected cells (from _selection)
        with the module in eval mode (its previous mode is restored afterwards). Logs
        "batches done/total" with the rate and ETA every PROGRESS_EVERY_S seconds and
        after the last batch."""
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size or 4096,
                                        shuffle=False)
        was_training = self.module.training
        self.module.eval()
        total = len(loader)
        started = last = time.monotonic()
        try:
            start = 0
            for done, tensors in enumerate(loader, 1):
                inputs = self.module._get_inference_input(tensors)
                stop = start + inputs["x"].shape[0]
                yield start, stop, inputs
                start = stop
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S or done == total:
                    rate = stop / max(now - started, 1e-9)
                    log.info("%s: batches %d/%d (%d/%d cells), %.0f cells/s, ETA %.0f s", what, done, total,
                             stop, len(indices), rate, (len(indices) - stop) / rate)
                    last = now
        finally:
            self.module.train(was_training)

    @torch.inference_mode()
    def get_latent_representation(self, adata=None, indices=None, batch_size=None, give_sample=False,
                                  out=None, give_mean=None, representation=None):
        """Latents of the selected cells: dict with "z_basal", "z", "z_corrected" (n, n_latent).

        With ``representation`` one of those keys, that array alone (as scvi-tools returns
        one array; cpa-tools returns the basal and the full latent). The posterior mean
        unless ``give_sample``; ``give_mean`` (scvi-tools' name) is its opposite. The module
        runs in eval mode. Results are written batch by batch into preallocated arrays (or
        into ``out``, a dict of arrays of the right shape, e.g. memory maps). The dict
        returned (a :class:`Latents`) says, for a key it lacks such as cpa-tools'
        "latent_basal", what the key is called here.
        """
        if give_mean is not None:
            give_sample = not give_mean
        if representation in cpa_tools_names.LATENTS:
            raise InputError(f"representation '{representation}' is cpa-tools' name; here it is "
                             f"'{cpa_tools_names.LATENTS[representation]}'.")
        if representation is not None and representation not in LATENT_KEYS:
            raise InputError(f"representation '{representation}' is not one of {list(LATENT_KEYS)} (z_basal: the "
                             "basal state; z: with the perturbation and covariates; z_corrected: without the batch).")
        adata, indices = self._selection(adata, indices)
        if out is None:
            out = Latents({key: np.empty((len(indices), self.module.n_latent), dtype=np.float32)
                           for key in LATENT_KEYS})
        for start, stop, inputs in self._eval_batches(adata, indices, batch_size, "latents"):
            result = self.module.inference(**inputs, sample=give_sample)
            for key in LATENT_KEYS:
                out[key][start:stop] = result[key].detach().cpu().numpy()
        return out if representation is None else out[representation]

    @torch.inference_mode()
    def predict(self, adata=None, indices=None, perturbation=None, dosage=None, batch_size=None,
                library_size=None, sample=False, seed=0, out=None, **kwargs):
        """Mean expression of the selected cells, (n, n_genes) float32.

        With ``perturbation`` (and ``dosage``; without it every drug at dose 1) given, every
        selected cell is predicted under that perturbation instead of its own (a
        counterfactual): its basal state and covariates are kept. For count likelihoods the mean is scaled to the cell's
        observed library size, or to ``library_size`` when given (e.g. 1e4). With
        ``sample``, one draw of the likelihood per cell (seeded) replaces the mean.

        The array is returned, never written to ``adata.obsm`` (cpa-tools writes
        ``obsm['CPA_pred']``): called as cpa-tools is, with an AnnData alone, it warns so
        once per model.
        """
        cpa_tools_names.check_keywords("predict()", kwargs, cpa_tools_names.PREDICT,
                                       cpa_tools_names.parameters_of(CPA.predict))
        if adata is not None and perturbation is None and indices is None and out is None \
                and not self.__dict__.get("_warned_predict_returns"):
            self.__dict__["_warned_predict_returns"] = True
            # stacklevel 3: past torch.inference_mode's wrapper, at the caller.
            warnings.warn(cpa_tools_names.PREDICT_RETURNS, UserWarning, stacklevel=3)
        adata, indices = self._selection(adata, indices)
        if out is None:
            out = np.empty((len(indices), self.module.n_genes), dtype=np.float32)
        override = None
        if perturbation is not None:
            state = self.adata_manager.get_state_registry(PERTURBATION_KEY)
            override = torch.as_tensor(encode_override(perturbation, dosage, state, 1))
        what = f"prediction under {perturbation} at {dosage}" if perturbation is not None else "prediction"
        for start, stop, inputs in self._eval_batches(adata, indices, batch_size, what):
            if override is not None:
                inputs["perturbation"] = override.expand(stop - start, -1)
            result = self.module.inference(**inputs, sample=False)
            library = result["library"]
            if library_size is not None:
                library = torch.full_like(library, float(library_size))
            generated = self.module.generative(result["z"], library)
            if sample:
                with torch.random.fork_rng():
                    torch.manual_seed(seed + start)
                    values = generated["px"].sample()
            else:
                values = generated["mean"]
            out[start:stop] = values.detach().cpu().numpy()
        return out

    # --- what the model learned ---------------------------------------------------------
    def get_drug_embeddings(self, dose=1.0, drugs=None, **kwargs):
        """(drugs x n_latent) DataFrame: each drug's vector scaled by its learned dose
        response at ``dose`` (see shardmap.cpa.embeddings); single drugs only."""
        from .embeddings import drug_embeddings

        return drug_embeddings(self, dose, drugs, **kwargs)

    def get_covariate_embeddings(self, **kwargs):
        """{covariate key: (categories x n_latent) DataFrame} of the covariate vectors."""
        from .embeddings import covariate_embeddings

        return covariate_embeddings(self, **kwargs)

    def get_dose_response(self, drugs=None, doses=(0.01, 0.1, 0.5, 1.0)):
        """The learned scalar dose response of each drug (columns drug, dose, response)."""
        from .embeddings import dose_responses

        return dose_responses(self, drugs, doses)

    def predict_dose_response(self, drugs, doses, adata=None, covariates=None, n_cells=500, seed=0):
        """Predicted expression of every gene across ``doses`` of each drug, from control
        cells per covariate group: a tidy DataFrame (see shardmap.cpa.dose_response)."""
        from .dose_response import predict_dose_response

        return predict_dose_response(self, drugs, doses, adata, covariates, n_cells, seed)

    def release(self, adata):
        """Forget ``adata``'s registration (scvi-tools keeps every AnnData a model has seen,
        which leaks memory when a loop feeds it shard after shard)."""
        uuid = adata.uns.get("_scvi_uuid") if adata is not None else None
        if uuid is None or uuid == self.adata_manager.adata_uuid:
            return
        self._per_instance_manager_store[self.id].pop(uuid, None)
        self._setup_adata_manager_store.pop(uuid, None)

    @property
    def drugs(self):
        return list(self.adata_manager.get_state_registry(PERTURBATION_KEY)["drugs"])

    @property
    def conditions(self):
        return list(self.adata_manager.get_state_registry(PERTURBATION_KEY)["conditions"])


__all__ = ["CPA"]
