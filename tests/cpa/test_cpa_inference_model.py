"""The inference tasks' torch-only path (shardmap.cpa.inference_model, h5ad_rows.row_blocks):
the same latents and counterfactuals as scvi-tools' CPA.load path, whatever the model's
likelihood and options and the file's storage; the same checks of the data, with
messages that name the cell; and no scvi-tools or anndata import."""

import json
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse

from shardmap.cpa import CPA, h5ad_rows
from shardmap.cpa.conditions import parse_condition, parse_obs
from shardmap.cpa.inference_model import InferenceModel
from shardmap.cpa.model_folder import load_model
from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.infer import infer_shard
from shardmap.cpa.tasks.predict import predict_counterfactual
from shardmap.errors import InputError

N_CELLS = 900


def screen(seed=5, n_cells=N_CELLS, n_genes=30):
    adata = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed)
    del adata.uns["truth"]
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 3 == 0, "run1", "run2")
    return adata


def trained_folder(tmp_path, adata, setup, **model_kwargs):
    """Train a small CPA on ``adata`` and save it; the file the tasks read is written too."""
    scvi.settings.seed = 0
    fitted = adata.copy()
    CPA.setup_anndata(fitted, **setup)
    model = CPA(fitted, n_latent=6, n_hidden=24, **model_kwargs)
    model.train(max_epochs=2, batch_size=128, accelerator="cpu", seed=0)
    model.save(str(tmp_path / "model"), save_anndata=False)
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    return tmp_path / "model", path


def config(setup):
    return {**{k: v for k, v in setup.items() if k != "covariate_keys"},
            "covariate_keys": setup.get("covariate_keys") or [], "shard_size": 400}


BASE = dict(perturbation_key="condition", dosage_key="dose", control_group="control", covariate_keys=["cell_type"])
VARIANTS = {
    "nb": (BASE, {}, "csr"),
    "nb batch": ({**BASE, "batch_key": "batch"}, {}, "csr"),
    "zinb variational": (BASE, {"recon_loss": "zinb", "variational": True}, "csr"),
    "gauss dense": (BASE, {"recon_loss": "gauss"}, "dense"),
    "no covariates, no dose": ({**BASE, "covariate_keys": None, "dosage_key": None}, {"doser_type": "mlp"}, "csr"),
    "layer, int64 indices": ({**BASE, "layer": "counts"}, {}, "csr64"),
}


def prepared(tmp_path, name):
    setup, model_kwargs, storage = VARIANTS[name]
    adata = screen()
    # no control cell in rows 100-299 (they go to the end), so cpa_predict skips blocks
    control = np.flatnonzero(adata.obs["condition"].astype(str) == "control")
    moved = control[(control >= 100) & (control < 300)]
    adata = adata[np.r_[np.setdiff1d(np.arange(adata.n_obs), moved), moved]].copy()
    if model_kwargs.get("recon_loss") == "gauss":
        adata.X = np.log1p(adata.X.toarray()).astype(np.float32)
    elif storage == "csr64":
        adata.layers["counts"] = adata.X.copy()
        adata.layers["counts"].indices = adata.layers["counts"].indices.astype(np.int64)
        adata.X = adata.X * 3  # not what the model reads
    return adata, setup, model_kwargs


@pytest.mark.parametrize("name", list(VARIANTS))
def test_latents_and_counterfactuals_equal_the_scvi_tools_path(tmp_path, name):
    adata, setup, model_kwargs = prepared(tmp_path, name)
    model_dir, path = trained_folder(tmp_path, adata, setup, **model_kwargs)
    reference = load_model(model_dir, ad.read_h5ad(path))
    cfg = config(setup)

    start, stop = 150, 820
    infer_shard(model_dir, path, start, stop, tmp_path / "shard.npz", batch_size=100, rows_per_block=256)
    expected = reference.get_latent_representation(indices=np.arange(start, stop))
    with np.load(tmp_path / "shard.npz") as got:
        assert (int(got["start"]), int(got["stop"])) == (start, stop)
        for key in ("z_basal", "z", "z_corrected"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=key)

    dosage = None if setup.get("dosage_key") is None else "0.5+2"
    # blocks of 100 rows; rows 100-299 hold no control cell, so their blocks are skipped
    predict_counterfactual(model_dir, path, cfg, "drug02+drug05", dosage, tmp_path / "cf.h5ad", chunk_rows=100,
                           batch_size=50)
    result = ad.read_h5ad(tmp_path / "cf.h5ad")
    controls = np.flatnonzero(adata.obs["condition"].astype(str) == "control")
    assert list(result.obs_names) == list(adata.obs_names[controls])
    expected = reference.predict(indices=controls, perturbation="drug02+drug05", dosage=dosage)
    np.testing.assert_allclose(result.X, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("storage", ["csr", "dense"])
@pytest.mark.parametrize("read_ahead", [True, False])
def test_row_blocks_equal_the_rows_anndata_reads(tmp_path, storage, read_ahead):
    adata = screen(n_cells=500)
    if storage == "dense":
        adata.X = adata.X.toarray()
    adata.X[7] = 0  # an empty row inside a block
    if storage == "csr":
        adata.X = sparse.csr_matrix(adata.X)
        adata.X.eliminate_zeros()
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    full = adata.X.toarray() if storage == "csr" else adata.X
    wanted = np.zeros(450, dtype=bool)
    wanted[[3, 200, 201]] = True
    # read, skip, read: the second read must not land in the buffer of the block held
    gapped = np.zeros(450, dtype=bool)
    gapped[[0, 130, 131, 300]] = True
    for rows_per_block, mask in ((1, None), (64, None), (1000, None), (64, wanted), (64, gapped)):
        seen = []
        for block in h5ad_rows.row_blocks(path, 40, 490, rows_per_block, read_ahead=read_ahead, wanted=mask):
            if read_ahead:
                time.sleep(0.01)  # the next block's read has finished before this one is compared
            dense = block.to_scipy(adata.n_vars)
            dense = dense.toarray() if sparse.issparse(dense) else dense
            np.testing.assert_array_equal(dense, full[block.start:block.stop])
            seen.append((block.start, block.stop))
        expected = [(s, min(s + rows_per_block, 490)) for s in range(40, 490, rows_per_block)]
        if mask is not None:
            expected = [(a, b) for a, b in expected if mask[a - 40:b - 40].any()]
        assert seen == expected


@pytest.fixture(scope="module")
def nb_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nb")
    adata = screen()
    model_dir, _ = trained_folder(folder, adata, BASE)
    return model_dir, adata


def write(tmp_path, adata, name="bad.h5ad"):
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("value, message", [
    (np.nan, r"NaN or Inf \(first at cell 'cell0421', gene column 4\)"),
    (-3.0, r"negative values \(first at cell 'cell0421', gene column 4\)"),
    (2.5, r"non-integer values \(first at cell 'cell0421', gene column 4\)"),
])
def test_bad_values_name_the_cell(tmp_path, nb_model, value, message):
    model_dir, adata = nb_model
    bad = adata.copy()
    bad.obs_names = [f"cell{i:04d}" for i in range(bad.n_obs)]
    dense = bad.X.toarray()
    dense[421, 4] = value
    bad.X = sparse.csr_matrix(dense)
    path = write(tmp_path, bad)
    with pytest.raises(InputError, match=message):
        infer_shard(model_dir, path, 400, 500, tmp_path / "s.npz", batch_size=30)
    assert not (tmp_path / "s.npz").exists()


def test_a_cell_without_counts_is_named(tmp_path, nb_model):
    model_dir, adata = nb_model
    bad = adata.copy()
    bad.obs_names = [f"cell{i:04d}" for i in range(bad.n_obs)]
    dense = bad.X.toarray()
    dense[433] = 0
    bad.X = sparse.csr_matrix(dense)
    path = write(tmp_path, bad)
    with pytest.raises(InputError, match="1 cell.* all 0 .*'cell0433'"):
        infer_shard(model_dir, path, 400, 500, tmp_path / "s.npz")


def with_obs(adata, **columns):
    obs = adata.obs.copy()
    for key, value in columns.items():
        obs[key] = value
    return ad.AnnData(adata.X, obs, adata.var)


@pytest.mark.parametrize("change, message", [
    (lambda a: a[:, a.var_names[::-1]].copy(), "the same genes in another order"),
    (lambda a: a[:, 1:].copy(), "it has 29 genes, the model 30"),
    (lambda a: with_obs(a, cell_type="neuron"), "obs\\['cell_type'\\] has the value 'neuron'"),
    (lambda a: with_obs(a, condition="drug99", dose="1"), "drug 'drug99' is not in the model's vocabulary"),
])
def test_data_the_model_cannot_read_is_a_clear_error(tmp_path, nb_model, change, message):
    model_dir, adata = nb_model
    path = write(tmp_path, change(adata.copy()))
    with pytest.raises(InputError, match=message):
        infer_shard(model_dir, path, 0, 100, tmp_path / "s.npz")


def test_a_missing_or_foreign_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist; train the model first"):
        InferenceModel.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    import torch

    torch.save({"weights": 1}, tmp_path / "other" / "model.pt")
    with pytest.raises(InputError, match="is not a model saved by CPA.save"):
        InferenceModel.load(tmp_path / "other")


def test_parse_obs_equals_parsing_each_cell(tmp_path):
    """The factorised parse against parsing every cell's strings one by one."""
    rng = np.random.default_rng(0)
    conditions = rng.choice(["control", "a", "b+a", "a+b", " a "], 300)
    doses = np.where(conditions == "control", "0", np.where(np.char.find(conditions.astype(str), "+") >= 0,
                                                             rng.choice(["1+0.5", "0.5+1"], 300), "1"))
    obs = pd.DataFrame({"condition": pd.Categorical(conditions), "dose": doses.astype(object)})
    obs.loc[5, "dose"] = 1.0  # a number among strings, as a spreadsheet export gives
    parsed, codes = parse_obs(obs, "condition", "dose", "control")
    for i in range(len(obs)):
        assert parsed[codes[i]] == parse_condition(obs["condition"][i], str(obs["dose"][i]), "control")
    parsed, codes = parse_obs(obs, "condition", None, "control")
    for i in range(len(obs)):
        assert parsed[codes[i]] == parse_condition(obs["condition"][i], None, "control")


def test_an_inference_task_imports_neither_scvi_tools_nor_anndata(tmp_path, nb_model):
    model_dir, adata = nb_model
    path = write(tmp_path, adata, "screen.h5ad")
    script = (
        "import json, sys\n"
        "from shardmap.cpa.tasks.infer import infer_shard\n"
        f"infer_shard({str(model_dir)!r}, {str(path)!r}, 0, 300, {str(tmp_path / 's.npz')!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'scvi', 'lightning', 'anndata'})))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
