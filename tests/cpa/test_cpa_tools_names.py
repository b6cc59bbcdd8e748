"""cpa-tools' names (keyword arguments, result keys, methods) each get a message naming
what CPA here calls the same thing, or saying that it has none and why; our own names
work as before."""

import pickle
import warnings

import numpy as np
import pytest
import scvi

from shardmap.cpa import CPA
from shardmap.cpa.cpa_tools_names import KeywordError
from shardmap.cpa.model import Latents
from shardmap.cpa.simulate import simulate_screen
from shardmap.errors import InputError

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control", covariate_keys=["cell_type"])
SIZES = dict(n_latent=4, n_hidden=16)


def screen():
    adata = simulate_screen(n_cells=300, n_genes=20, seed=3)
    del adata.uns["truth"]
    return adata


@pytest.fixture(scope="module")
def adata():
    data = screen()
    CPA.setup_anndata(data, **SETUP)
    return data


@pytest.fixture(scope="module")
def model(adata):
    scvi.settings.seed = 0
    trained = CPA(adata, **SIZES)
    trained.train(max_epochs=1, batch_size=128, accelerator="cpu", seed=0)
    return trained


# ---- CPA(adata, ...) --------------------------------------------------------------------

@pytest.mark.parametrize("name, value, ours", [
    ("n_hidden_encoder", 256, "n_hidden"), ("n_hidden_decoder", 256, "n_hidden"),
    ("n_layers_encoder", 3, "n_layers"), ("n_layers_decoder", 3, "n_layers"),
    ("dropout_rate_encoder", 0.1, "dropout"), ("loss_ae", "nb", "recon_loss"),
    ("drug_embeddings", None, "drug_fingerprints"), ("use_batch_norm_encoder", True, "batch norm"),
    ("n_hidden_doser", 64, "doser_type='mlp'"), ("use_rdkit_embeddings", True, "smiles_key"),
    ("seed", 1, "scvi.settings.seed")])
def test_init_names_say_ours(adata, name, value, ours):
    with pytest.raises(KeywordError, match=rf"'{name}' \(a cpa-tools name\).*{ours}") as caught:
        CPA(adata, **SIZES, **{name: value})
    assert isinstance(caught.value, InputError) and isinstance(caught.value, TypeError)


def test_init_split_key_names_train_indices_and_the_config_key(adata):
    for name in ("split_key", "train_split", "valid_split", "test_split"):
        with pytest.raises(InputError, match=r"train\(train_indices=\.\.\., validation_indices=\.\.\.\).*"
                                             r"cpa\.split_key.*shardmap\.cpa\.splits"):
            CPA(adata, **SIZES, **{name: "split"})


def test_several_init_names_are_listed_together_and_unknown_names_list_our_parameters(adata):
    with pytest.raises(KeywordError, match=r"(?s)2 arguments.*n_hidden_encoder.*n_hidden.*n_layers_encoder"):
        CPA(adata, n_hidden_encoder=256, n_layers_encoder=3)
    with pytest.raises(KeywordError, match=r"unexpected keyword argument 'n_hiden'.*n_latent, recon_loss, "
                                           r"doser_type, variational, n_hidden, n_layers, dropout, drug_fingerprints"):
        CPA(adata, n_hiden=16)


# ---- setup_anndata ---------------------------------------------------------------------

@pytest.mark.parametrize("name, value, ours", [
    ("is_count_data", True, "recon_loss"), ("deg_uns_key", "rank_genes_groups_cov", "every gene"),
    ("deg_uns_cat_key", "cov_cond", "every gene"), ("max_comb_len", 2, "largest combination"),
    ("drug_key", "condition", "perturbation_key"), ("control_key", "control", "control_group"),
    ("copy", True, r"adata\.copy\(\)")])
def test_setup_anndata_names_say_ours(name, value, ours):
    with pytest.raises(KeywordError, match=rf"'{name}' \(a cpa-tools name\).*{ours}"):
        CPA.setup_anndata(screen(), **SETUP, **{name: value})


def test_setup_anndata_unknown_name_keeps_the_generic_message():
    with pytest.raises(InputError, match=r"setup_anndata has no argument\(s\) \['covariates'\]"):
        CPA.setup_anndata(screen(), **SETUP, covariates=["cell_type"])


# ---- train -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, ours", [
    ("use_gpu", False, "accelerator='cpu'"), ("save_path", "out", r"model\.save\(path"),
    ("validation_size", 0.1, "validation_indices"), ("hyperopt", True, "selection_history")])
def test_train_names_say_ours(model, name, value, ours):
    with pytest.raises(KeywordError, match=rf"train\(\) has no argument '{name}'.*{ours}"):
        model.train(max_epochs=1, accelerator="cpu", **{name: value})


def test_train_plan_kwargs_names_say_ours(model):
    with pytest.raises(KeywordError, match=r"(?s)'wd'.*weight_decay.*'mixup_alpha'.*no mixup"):
        model.train(max_epochs=1, accelerator="cpu", plan_kwargs={"wd": 1e-6, "mixup_alpha": 0.2})


# ---- latents --------------------------------------------------------------------------

def test_latents_say_our_keys_and_stay_a_dict(model):
    latents = model.get_latent_representation(indices=np.arange(30))
    assert isinstance(latents, dict) and isinstance(latents, Latents)
    assert latents["z_basal"].shape == (30, SIZES["n_latent"])
    for theirs, ours in (("latent_basal", "z_basal"), ("latent_after", "z"), ("latent_corrected", "z_corrected")):
        with pytest.raises(KeyError, match=rf"'{theirs}' is cpa-tools' name; here it is '{ours}'.*not AnnData"):
            latents[theirs]
    with pytest.raises(KeyError, match="no latent 'latent'; the keys are 'z_basal', 'z', 'z_corrected'"):
        latents["latent"]
    assert latents.get("latent_basal") is None and "latent_basal" not in latents
    copy = pickle.loads(pickle.dumps(latents))
    assert type(copy) is Latents and copy.keys() == latents.keys()
    assert dict(latents) == {key: latents[key] for key in latents}
    with pytest.raises(InputError, match="'latent_basal' is cpa-tools' name; here it is 'z_basal'"):
        model.get_latent_representation(indices=np.arange(5), representation="latent_basal")


# ---- predict ------------------------------------------------------------------------------

def test_predict_with_an_anndata_alone_warns_once_that_it_returns_the_array(adata):
    scvi.settings.seed = 0
    fresh = CPA(adata, **SIZES)  # its own warning flag: the module fixture's model may have warned already
    with pytest.warns(UserWarning, match=r"returns .*array and does not write adata\.obsm\['CPA_pred'\].*"
                                         r"adata\.obsm\['CPA_pred'\] = model\.predict\(adata\)") as caught:
        predicted = fresh.predict(adata)
    assert predicted.shape == (adata.n_obs, adata.n_vars) and "CPA_pred" not in adata.obsm
    assert caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.predict(adata)  # once per model
        fresh.predict(adata, perturbation="drug00", dosage="1")
        fresh.predict(adata, indices=np.arange(10))


def test_predict_without_a_cpa_tools_call_warns_nothing(adata):
    scvi.settings.seed = 0
    fresh = CPA(adata, **SIZES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.predict(adata, perturbation="drug00", dosage="1")
        fresh.predict(adata, indices=np.arange(10))
        fresh.predict()


@pytest.mark.parametrize("name, value", [("n_samples", 20), ("return_mean", True)])
def test_predict_sampling_names_say_ours(model, adata, name, value):
    with pytest.raises(KeywordError, match=rf"'{name}' \(a cpa-tools name\).*sample=True"):
        model.predict(adata, indices=np.arange(5), **{name: value})
    with pytest.raises(KeywordError, match=r"unexpected keyword argument 'samples'.*perturbation, dosage"):
        model.predict(adata, indices=np.arange(5), samples=3)


# ---- methods ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, ours", [
    ("custom_predict", r"predict\(adata, indices=\.\.\., perturbation=\.\.\., dosage=\.\.\.\)"),
    ("get_pert_embeddings", r"get_drug_embeddings\(dose=\.\.\."),
    ("get_covar_embeddings", r"get_covariate_embeddings\(\)")])
def test_cpa_tools_methods_name_ours(model, name, ours):
    assert not hasattr(model, name)
    with pytest.raises(AttributeError, match=ours):
        getattr(model, name)


def test_other_missing_attributes_are_plain(model):
    with pytest.raises(AttributeError, match="^'CPA' object has no attribute 'no_such_thing'$"):
        model.no_such_thing
    assert getattr(model, "no_such_thing", 7) == 7
    assert model.drugs[:2] == ["drug00", "drug01"]


def test_save_and_load_are_untouched(model, adata, tmp_path):
    model.save(str(tmp_path / "model"), save_anndata=False)
    assert model.init_params_["kwargs"] == {}
    loaded = CPA.load(str(tmp_path / "model"), adata=adata)
    np.testing.assert_array_equal(loaded.get_latent_representation(indices=np.arange(20))["z"],
                                  model.get_latent_representation(indices=np.arange(20))["z"])


# ---- embeddings and dose response ----------------------------------------------------------

def test_embedding_names_say_ours(model):
    with pytest.raises(KeywordError, match=r"'dosage' \(a cpa-tools name\).*here it is dose "):
        model.get_drug_embeddings(dosage=1.0)
    with pytest.raises(KeywordError, match=r"'pert' \(a cpa-tools name\).*here it is drugs "):
        model.get_drug_embeddings(pert="drug00")
    with pytest.raises(KeywordError, match=r"'covariate' \(a cpa-tools name\).*\[covariate\]"):
        model.get_covariate_embeddings(covariate="cell_type")
    assert model.get_drug_embeddings(dose=0.5, drugs=["drug00"]).shape == (1, SIZES["n_latent"])
    assert list(model.get_covariate_embeddings()) == ["cell_type"]


def test_combinations_are_refused_as_combinations_not_as_unknown_drugs(model, adata):
    with pytest.raises(InputError, match=r"get_drug_embeddings takes single drugs: 'drug00\+drug01' combines "
                                         r"'drug00', 'drug01'.*sum of its drugs' embeddings") as caught:
        model.get_drug_embeddings(drugs=["drug00+drug01"])
    assert "vocabulary" not in str(caught.value)
    with pytest.raises(InputError, match=r"predict_dose_response takes single drugs: 'drug00\+drug01' combines "
                                         r"'drug00', 'drug01'.*predict\(adata, indices=\.\.\., "
                                         r"perturbation='drug00\+drug01', dosage='1\+1'\)"):
        model.predict_dose_response(["drug00+drug01"], [0.5, 1.0], adata=adata, n_cells=5)
    with pytest.raises(InputError, match=r"get_dose_response takes single drugs.*not in the model's vocabulary: "
                                         r"\['drugXX'\]"):
        model.get_dose_response(["drug00+drugXX"])
    with pytest.raises(InputError, match=r"\['drugXX'\] are not in the model's vocabulary"):
        model.get_drug_embeddings(drugs=["drugXX"])
