"""The CPA model: sharded latents, save/load, vocabularies, doses, dosers, determinism."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

from shardmap.cpa import CPA
from shardmap.cpa.model_folder import load_model
from shardmap.cpa.tasks.evaluate import evaluate
from shardmap.cpa.tasks.infer import infer_shard
from shardmap.cpa.tasks.merge import LATENT_OBSM, merge_latents
from shardmap.cpa.tasks.train import train_model
from shardmap.cpa.perturbations import OBSM_KEY
from shardmap.cpa.simulate import simulate_screen

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control",
             covariate_keys=["cell_type"])
SMALL = dict(n_latent=8, n_hidden=32)


def train_small(adata, epochs=3, accelerator="cpu", **model_kwargs):
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP)
    model = CPA(adata, **{**SMALL, **model_kwargs})
    model.train(max_epochs=epochs, batch_size=128, accelerator=accelerator, seed=0)
    return model


@pytest.fixture(scope="module")
def screen():
    return simulate_screen(n_cells=1500, n_genes=40, seed=3)


@pytest.fixture(scope="module")
def trained(screen, tmp_path_factory):
    adata = screen.copy()
    model = train_small(adata)
    folder = tmp_path_factory.mktemp("model")
    model.save(str(folder / "model"), save_anndata=False)
    path = folder / "screen.h5ad"
    copy = screen.copy()
    del copy.uns["truth"]
    copy.write_h5ad(path)
    return model, adata, folder / "model", path


CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None}


@pytest.mark.parametrize("shard_size", [1500, 700, 499, 1])
def test_sharded_latents_equal_one_pass(trained, tmp_path, shard_size):
    model, adata, model_dir, path = trained
    if shard_size == 1:
        bounds = [(0, 1), (1, 1500)]
    else:
        bounds = [(s, min(s + shard_size, 1500)) for s in range(0, 1500, shard_size)]
    files = []
    for k, (start, stop) in enumerate(bounds):
        files.append(tmp_path / f"shard-{k}.npz")
        infer_shard(model_dir, path, start, stop, files[-1], batch_size=256)
    merge_latents(path, files, tmp_path / "latents.h5ad")
    merged = ad.read_h5ad(tmp_path / "latents.h5ad")
    assert list(merged.obs_names) == list(adata.obs_names)
    assert list(merged.obs["condition"].astype(str)) == list(adata.obs["condition"].astype(str))
    full = model.get_latent_representation(adata)
    for key, name in LATENT_OBSM.items():
        np.testing.assert_allclose(merged.obsm[name], full[key], rtol=1e-5, atol=1e-5)


def test_indices_select_rows_in_order(trained):
    model, adata, _, _ = trained
    full = model.get_latent_representation(adata)
    picked = np.array([5, 3, 1200, 7])
    part = model.get_latent_representation(adata, indices=picked, batch_size=3)
    np.testing.assert_allclose(part["z"], full["z"][picked], rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(trained, screen):
    model, adata, model_dir, _ = trained
    other = screen.copy()
    loaded = CPA.load(str(model_dir), adata=other)
    a, b = model.get_latent_representation(adata), loaded.get_latent_representation(other)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(model.predict(adata, indices=np.arange(50)),
                                  loaded.predict(other, indices=np.arange(50)))
    assert loaded.drugs == model.drugs and loaded.conditions == model.conditions


def test_trains_on_a_gpu_and_the_saved_model_infers_on_the_cpu(screen, tmp_path):
    """cpa.train.accelerator: gpu trains on the GPU; the inference tasks load the saved
    model on the CPU and give the latents and predictions of the GPU model."""
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    adata = screen.copy()
    model = train_small(adata, accelerator="gpu")
    assert next(model.module.parameters()).device.type == "cuda"
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    on_gpu = model.get_latent_representation(adata)
    predicted_on_gpu = model.predict(adata, indices=np.arange(50))
    model.save(str(tmp_path / "model"), save_anndata=False)
    other = screen.copy()
    loaded = load_model(tmp_path / "model", other)
    assert next(loaded.module.parameters()).device.type == "cpu"
    on_cpu = loaded.get_latent_representation(other)
    for key in on_gpu:
        np.testing.assert_allclose(on_cpu[key], on_gpu[key], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.predict(other, indices=np.arange(50)), predicted_on_gpu, rtol=1e-4,
                               atol=1e-5)


def test_categories_in_another_order_are_encoded_identically(trained, screen):
    model, adata, _, _ = trained
    shuffled = screen.copy()
    for column in ("condition", "dose", "cell_type"):
        categories = list(shuffled.obs[column].cat.categories)[::-1]
        shuffled.obs[column] = shuffled.obs[column].cat.reorder_categories(categories)
    a = model.get_latent_representation(adata)
    b = model.get_latent_representation(shuffled)
    np.testing.assert_array_equal(a["z"], b["z"])
    np.testing.assert_array_equal(adata.obsm[OBSM_KEY], shuffled.obsm[OBSM_KEY])


def test_dose_stays_with_its_drug_whatever_the_order(trained):
    model, adata, _, _ = trained
    cells = np.arange(20)
    ab = model.predict(adata, indices=cells, perturbation="drug00+drug03", dosage="1.0+0.5")
    ba = model.predict(adata, indices=cells, perturbation="drug03+drug00", dosage="0.5+1.0")
    swapped = model.predict(adata, indices=cells, perturbation="drug03+drug00", dosage="1.0+0.5")
    np.testing.assert_array_equal(ab, ba)
    assert np.abs(ab - swapped).max() > 1e-4
    obs = pd.DataFrame({"condition": ["drugA+drugB", "drugB+drugA", "control"],
                        "dose": ["1.0+0.5", "0.5+1.0", "0"]})
    from shardmap.cpa.codes import encode
    from shardmap.cpa.conditions import parse_obs

    parsed, codes = parse_obs(obs, "condition", "dose", "control")
    table = encode(parsed, codes, {"drugA": 0, "drugB": 1}, {"control": 0, "drugA+drugB": 1}, 2, "control")
    np.testing.assert_array_equal(table[0], table[1])
    np.testing.assert_array_equal(table[0], [0, 1, 1.0, 0.5, 1])
    np.testing.assert_array_equal(table[2], [2, 2, 0, 0, 0])


def test_perturbations_are_stored_sparsely(trained):
    model, adata, _, _ = trained
    encoded = adata.obsm[OBSM_KEY]
    assert encoded.shape == (adata.n_obs, 2 * 2 + 1)  # at most 2 drugs per cell, not n_drugs columns
    assert len(model.drugs) == 10


@pytest.mark.parametrize("doser", ["logsigm", "sigm", "linear", "mlp"])
def test_every_doser_trains_and_is_zero_at_dose_zero(screen, doser):
    adata = screen.copy()
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP)
    model = CPA(adata, **SMALL, doser_type=doser)
    before = [p.detach().clone() for p in model.module.doser_parameters()]
    model.train(max_epochs=2, batch_size=128, accelerator="cpu", seed=0)
    losses = model.history["train_loss"].to_numpy(dtype=float)
    assert np.isfinite(losses).all()
    after = model.module.doser_parameters()
    assert len(after) == len(before) and (doser == "linear") == (len(after) == 0)
    assert all((a - b).abs().max() > 0 for a, b in zip(after, before)), "doser parameters never trained"
    drugs = torch.arange(len(model.drugs)).unsqueeze(0)
    assert torch.all(model.module.doser(drugs, torch.zeros_like(drugs, dtype=torch.float32)) == 0)
    curve = model.module.doser(drugs, torch.ones_like(drugs, dtype=torch.float32))
    assert torch.isfinite(curve).all()


def test_variational_latents_are_the_deterministic_posterior_mean(screen):
    adata = screen.copy()
    model = train_small(adata, epochs=2, variational=True)
    first = model.get_latent_representation(adata)
    second = model.get_latent_representation(adata)
    np.testing.assert_array_equal(first["z_basal"], second["z_basal"])
    sampled = model.get_latent_representation(adata, give_sample=True)
    assert np.abs(sampled["z_basal"] - first["z_basal"]).max() > 1e-3


def test_inference_runs_in_eval_mode_and_restores_the_mode(trained):
    model, adata, _, _ = trained
    model.module.train()
    a = model.get_latent_representation(adata, indices=np.arange(100))
    assert model.module.training
    model.module.eval()
    b = model.get_latent_representation(adata, indices=np.arange(100))
    np.testing.assert_array_equal(a["z"], b["z"])


def test_results_do_not_depend_on_dataloader_workers(screen):
    latents = []
    for workers in (0, 2):
        adata = screen.copy()
        scvi.settings.seed = 0
        CPA.setup_anndata(adata, **SETUP)
        model = CPA(adata, **SMALL)
        model.train(max_epochs=2, batch_size=128, accelerator="cpu", seed=0, num_workers=workers,
                    persistent_workers=workers > 0)
        latents.append(model.get_latent_representation(adata)["z"])
    np.testing.assert_array_equal(latents[0], latents[1])


def test_batch_is_left_out_of_z_corrected(screen):
    adata = screen.copy()
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "b1", "b2"))
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP, batch_key="batch")
    model = CPA(adata, **SMALL)
    model.train(max_epochs=1, batch_size=128, accelerator="cpu")
    lat = model.get_latent_representation(adata)
    embedding = model.module.batch_embedding.weight.detach().numpy()
    codes = adata.obs["batch"].cat.codes.to_numpy()
    np.testing.assert_allclose(lat["z"] - lat["z_corrected"], embedding[codes], rtol=1e-5, atol=1e-5)


def test_on_the_additive_screen_the_model_matches_the_additive_baseline(tmp_path):
    """The additive screen (log-linear read-out: summing the single drugs' shifts is nearly
    the truth) with the demo's settings. In every group the model's top-20-DEG R^2 is
    above no change, and above train mean in all groups but one. Its median
    Pearson-delta (top-20 DEGs 0.966 against 0.959; all genes 0.877 against 0.882) and
    MAE match the additive baseline's (compared within 0.02). Its median top-20-DEG R^2
    stays below the additive baseline's (0.89 against 0.95: the target of issue 27 is not
    met, and README, "Against the baselines", says so); the test keeps it within 0.08."""
    adata = simulate_screen(n_cells=6000, n_genes=200, seed=0)  # the additive screen
    del adata.uns["truth"]
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    cfg = {**CFG, "holdout": ["drug00+drug01", "drug02+drug03"], "split_key": None,
           "model": {"n_latent": 16, "n_hidden": 64, "recon_loss": "nb", "doser_type": "linear"},
           "train": {"max_epochs": 50, "batch_size": 128, "seed": 0,
                     "plan": {"lr": 3e-3, "adv_lr": 1e-2, "reg_adv": 50.0, "pen_adv": 0.1, "n_epochs_adv_warmup": 0,
                              "adv_steps": 1}}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's thread count: the numbers above are for it
    try:
        train_model(path, cfg, tmp_path / "model", tmp_path / "splits.tsv", accelerator="cpu")
        rows = evaluate(tmp_path / "model", path, cfg, tmp_path / "splits.tsv", tmp_path / "metrics.tsv")
    finally:
        torch.set_num_threads(threads)
    # "drug01+drug00" at "0.5+1" is reported as "drug00+drug01" at "1+0.5"
    assert {(r["condition"], r["dosage"]) for r in rows} == {
        ("drug00+drug01", "1+1"), ("drug00+drug01", "1+0.5"), ("drug02+drug03", "1+1"),
        ("drug02+drug03", "1+0.5")}
    assert all(len(r["deg20"].split(",")) == 20 for r in rows)
    column = lambda key: np.array([r[key] for r in rows], dtype=float)  # noqa: E731
    median = lambda key: float(np.median(column(key)))  # noqa: E731
    assert median("pearson_delta_deg20") > median("additive_pearson_delta_deg20") - 0.02
    assert median("pearson_delta_all") > median("additive_pearson_delta_all") - 0.02
    assert median("mae_all") < median("additive_mae_all") + 0.02
    assert median("r2_mean_deg20") > median("additive_r2_mean_deg20") - 0.08
    assert np.all(column("r2_mean_deg20") > column("no_change_r2_mean_deg20"))
    # Train mean: above it in all groups but one (0.69 against 0.74 for drug00+drug01 at
    # "1+0.5" in type1, measured), and by far in the median.
    above = column("r2_mean_deg20") > column("train_mean_r2_mean_deg20")
    assert above.sum() >= len(rows) - 1, above
    assert median("r2_mean_deg20") > median("train_mean_r2_mean_deg20") + 0.2
    assert column("r2_mean_all").mean() > column("no_change_r2_mean_all").mean()


def with_smiles(adata):
    """A SMILES column aligned with the condition strings: drug k is a chain of k + 1 carbons
    with an alcohol, so every drug has a distinct fingerprint."""
    def smiles(condition):
        if condition == "control":
            return ""
        return "+".join("C" * (int(drug[4:]) + 1) + "O" for drug in condition.split("+"))
    adata.obs["smiles"] = pd.Categorical([smiles(c) for c in adata.obs["condition"].astype(str)])
    return adata


def test_smiles_embeddings_train_and_load_without_rdkit(screen, tmp_path, monkeypatch):
    pytest.importorskip("rdkit")
    adata = with_smiles(screen.copy())
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **SETUP, smiles_key="smiles")
    model = CPA(adata, **SMALL)
    assert model.module.drug_embedding is None
    before = [p.detach().clone() for p in model.module.fingerprint_projection.parameters()]
    model.train(max_epochs=2, batch_size=128, accelerator="cpu", seed=0)
    after = list(model.module.fingerprint_projection.parameters())
    assert any((a - b).abs().max() > 0 for a, b in zip(after, before)), "projection never trained"
    model.save(str(tmp_path / "m"), save_anndata=False)
    expected = model.get_latent_representation(adata, indices=np.arange(200))
    monkeypatch.setitem(__import__("sys").modules, "rdkit", None)  # loading needs no RDKit
    subset = adata[:200].copy()  # a shard that lacks some drugs
    loaded = CPA.load(str(tmp_path / "m"), adata=subset)
    np.testing.assert_array_equal(loaded.get_latent_representation(subset)["z"], expected["z"])


@pytest.mark.parametrize("recon_loss", ["zinb", "gauss"])
def test_other_likelihoods_train(screen, recon_loss):
    adata = screen.copy()
    if recon_loss == "gauss":
        counts = adata.X.toarray()
        adata.X = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    model = train_small(adata, epochs=2, recon_loss=recon_loss)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    mean = model.predict(adata, indices=np.arange(30))
    assert np.isfinite(mean).all()
    if recon_loss == "zinb":  # the mean of the zero-inflated distribution, below the NB mean
        assert (mean >= 0).all()


def test_no_covariates_and_few_minibatches_per_epoch(screen):
    """Without covariates, and with fewer minibatches per epoch than adv_steps, the
    autoencoder still trains."""
    adata = screen[:400].copy()
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, perturbation_key="condition", dosage_key="dose", control_group="control")
    model = CPA(adata, **SMALL)
    before = model.module.z_mean.weight.detach().clone()
    model.train(max_epochs=6, batch_size=256, accelerator="cpu", seed=0)  # 2 minibatches per epoch
    assert (model.module.z_mean.weight - before).abs().max() > 0
    assert "train_loss" in model.history
    assert model.get_latent_representation(adata)["z"].shape == (400, SMALL["n_latent"])


def test_inference_logs_batches_done_of_total(trained, caplog, monkeypatch):
    """Long inference passes say how far they are: a line per PROGRESS_EVERY_S and one at the end."""
    import logging

    from shardmap.cpa import model as model_module

    model, adata, _, _ = trained
    monkeypatch.setattr(model_module, "PROGRESS_EVERY_S", 0.0)  # every batch, for the test
    with caplog.at_level(logging.INFO, logger="shardmap.cpa.model"):
        model.get_latent_representation(adata, batch_size=500)
    lines = [r.getMessage() for r in caplog.records if "batches" in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == ["latents: batches 1/3 (500/1500 cells)",
                                                      "latents: batches 2/3 (1000/1500 cells)",
                                                      "latents: batches 3/3 (1500/1500 cells)"]
    assert all("cells/s" in line and "ETA" in line for line in lines)


def test_training_logs_a_plain_line_per_epoch_without_a_progress_bar(screen, caplog):
    import logging

    adata = screen.copy()
    with caplog.at_level(logging.INFO, logger="shardmap.cpa.training"):
        model = train_small(adata, epochs=2)
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert "acc_perturbation=" in epochs[-1] and "validation_loss=" in epochs[-1]
    assert model.trainer.progress_bar_callback is None  # no bar in a log file
