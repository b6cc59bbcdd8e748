"""The perturbation arm's up-front checks (rule cpa_check_inputs): every problem of the
screen against the config is reported before training, naming the file, key or value,
and nothing heavy has run when the workflow stops."""

import os

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import sparse

from projects import snakemake
from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.check_inputs import check_inputs
from shardmap.cpa.tasks.merge import merge_latents
from shardmap.cpa.values import check_values
from shardmap.errors import InputError


# --- the perturbation screen -----------------------------------------------------------

CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None, "split_key": None, "holdout": ["drug00+drug01"],
       "model": {"recon_loss": "nb"}, "train": {"seed": 0},
       "counterfactuals": [{"perturbation": "drug01+drug00", "dosage": "1+1"}]}


@pytest.fixture(scope="module")
def screen():
    adata = simulate_screen(n_cells=300, n_genes=20, seed=5)
    del adata.uns["truth"]
    return adata


def check(tmp_path, adata, cfg=None, rows_per_chunk=100):
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "adata.tsv"
    try:
        return check_inputs(path, {**CFG, **(cfg or {})}, out, rows_per_chunk=rows_per_chunk)
    except InputError:
        assert not out.exists()
        raise


def with_obs(adata, column, values):
    adata = adata.copy()
    adata.obs[column] = pd.Categorical(values)
    return adata


def test_a_good_screen_passes_with_a_summary(tmp_path, screen):
    summary = check(tmp_path, screen)
    assert summary["cells"] == 300 and summary["genes"] == 20 and summary["test_cells"] > 0
    assert (tmp_path / "adata.tsv").read_text().startswith("cells\t300\n")


def test_dense_storage_passes_too(tmp_path, screen):
    dense = screen.copy()
    dense.X = dense.X.toarray()
    assert check(tmp_path, dense)["cells"] == 300


@pytest.mark.parametrize("change, fragment", [
    ({"covariate_keys": ["tissue"]}, "obs has no column 'tissue'"),
    ({"perturbation_key": "drug"}, "obs has no column 'drug'"),
    ({"control_group": "DMSO"}, "no cell of obs['condition'] is the control group 'DMSO'"),
    ({"holdout": ["drug00+drug99"]}, "cpa.holdout names ['drug00+drug99'], which no cell has"),
    ({"counterfactuals": [{"perturbation": "drug77", "dosage": "1"}]},
     "cpa.counterfactuals[0] names ['drug77'], which no cell of cpa.adata was treated with"),
    ({"counterfactuals": [{"perturbation": "drug00+drug01", "dosage": "1"}]},
     "cpa.counterfactuals[0]: condition 'drug00+drug01' has 2 drug(s) but dosage '1' has 1 part(s)"),
    ({"split_key": "cell_type"}, "split labels must be one of"),
])
def test_config_that_does_not_fit_the_screen(tmp_path, screen, change, fragment):
    with pytest.raises(InputError) as info:
        check(tmp_path, screen, change)
    assert fragment in str(info.value)


def test_dose_with_the_wrong_number_of_parts(tmp_path, screen):
    doses = screen.obs["dose"].astype(str).to_numpy().copy()
    combo = np.flatnonzero(screen.obs["condition"].astype(str).str.contains(r"\+"))[0]
    doses[combo] = "1"
    with pytest.raises(InputError, match=r"has 2 drug\(s\) but dosage '1' has 1 part"):
        check(tmp_path, with_obs(screen, "dose", doses))


def test_every_cell_in_the_control_group(tmp_path, screen):
    control = with_obs(screen, "condition", ["control"] * screen.n_obs)
    with pytest.raises(InputError, match="every cell is in the control group 'control'"):
        check(tmp_path, control, {"holdout": [], "counterfactuals": []})


def test_missing_values_in_a_configured_obs_column(tmp_path, screen):
    data = screen.copy()
    data.obs["cell_type"] = data.obs["cell_type"].astype(object)
    data.obs.iloc[7, data.obs.columns.get_loc("cell_type")] = None
    with pytest.raises(InputError, match=r"obs\['cell_type'\] has missing values in 1 cells"):
        check(tmp_path, data)


@pytest.mark.parametrize("value, fragment", [(0.5, "non-integer values"), (-2.0, "negative values"),
                                             (np.inf, "NaN or Inf")])
def test_counts_that_are_not_counts_are_found_in_any_chunk(tmp_path, screen, value, fragment):
    data = screen.copy()
    matrix = data.X.toarray()
    matrix[250, 3] = value  # in the third chunk of 100 rows
    data.X = sparse.csr_matrix(matrix)
    with pytest.raises(InputError) as info:
        check(tmp_path, data)
    assert f"holds {fragment} (first at cell '{data.obs_names[250]}', gene column 3)" in str(info.value)


def test_a_gene_stored_twice_for_one_cell_is_named(tmp_path, screen):
    """A CSR matrix with a duplicate entry means the sum of the two; the inference tasks read
    stored values as they are, so the check asks for the duplicates to be summed."""
    data = screen.copy()
    matrix = data.X.tocsr()
    row = 230
    lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
    indices = np.insert(matrix.indices, hi, matrix.indices[lo])  # the row's first gene once more
    values = np.insert(matrix.data, hi, 1.0)
    indptr = matrix.indptr.copy()
    indptr[row + 1:] += 1
    data.X = sparse.csr_matrix((values, indices, indptr), shape=matrix.shape)
    assert data.X.nnz == matrix.nnz + 1
    with pytest.raises(InputError) as info:
        check(tmp_path, data)
    assert (f"stores gene column {matrix.indices[lo]} of cell '{data.obs_names[row]}' twice"
            in str(info.value)) and "sum_duplicates()" in str(info.value)
    assert "twice (a CSR matrix with duplicate entries" in str(info.value)
    data.X.sum_duplicates()
    assert check(tmp_path, data)["cells"] == 300


def test_a_gaussian_likelihood_accepts_log_normalised_values(tmp_path, screen):
    data = screen.copy()
    data.X = sparse.csr_matrix(np.log1p(data.X.toarray()))
    assert check(tmp_path, data, {"model": {"recon_loss": "gauss"}})["cells"] == 300


def test_empty_and_unreadable_files(tmp_path, screen):
    with pytest.raises(InputError, match="has no cells"):
        check(tmp_path, screen[:0].copy())
    junk = tmp_path / "junk.h5ad"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="junk.h5ad' is not a readable .h5ad"):
        check_inputs(junk, CFG, tmp_path / "out.tsv")
    with pytest.raises(InputError, match="none.h5ad' does not exist"):
        check_inputs(tmp_path / "none.h5ad", CFG, tmp_path / "out.tsv")


def test_csc_storage_names_the_conversion(tmp_path, screen):
    data = screen.copy()
    data.X = sparse.csc_matrix(data.X)
    with pytest.raises(InputError, match=r"stored as csc_matrix.*tocsr\(\)"):
        check(tmp_path, data)


# --- through the workflow: nothing heavy starts ----------------------------------------

def test_a_bad_screen_stops_the_workflow_before_training(tmp_path, screen):
    """A holdout that leaves a drug untrained: the check rule stops the run, and the
    training never starts."""
    screen.write_h5ad(tmp_path / "screen.h5ad")
    config = {"outdir": "out", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "adata": "screen.h5ad", "covariate_keys": ["cell_type"],
                      "holdout": ["drug03", "drug02+drug03"]}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "leaves drug(s) ['drug03'] without any training cell" in result.stderr
    assert not (tmp_path / "out" / "logs" / "cpa" / "train.log").exists()
    assert not (tmp_path / "out" / "cpa" / "model").exists()
    assert os.listdir(tmp_path / "out" / "logs" / "cpa") == ["check_inputs.log"]


def assert_refused_before_any_job(workdir, screen, cpa, fragment):
    """The screen and a config of the perturbation arm with ``cpa``: the dry run stops with
    ``fragment`` while the job graph is built, and nothing is written."""
    screen.write_h5ad(workdir / "screen.h5ad")
    config = {"outdir": "out", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "adata": "screen.h5ad", "covariate_keys": ["cell_type"], **cpa}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n")
    assert result.returncode != 0
    assert fragment in result.stdout + result.stderr
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("cpa, fragment", [
    ({"counterfactuals": [{"perturbation": "drug77", "dosage": "1"}]},
     "cpa.counterfactuals[0] names ['drug77'], which no cell of cpa.adata was treated with"),
    ({"dose_response": {"drugs": ["drug02", "Drug04"]}},
     "cpa.dose_response.drugs names ['Drug04'], which no cell of cpa.adata was treated with"),
    ({"dose_response": {"drugs": ["drug00+drug01"]}}, "a dose response is computed for single drugs"),
    ({"dose_response": {"drugs": ["control"]}}, "cpa.dose_response.drugs names ['control'], which no cell"),
])
def test_drugs_the_config_names_are_checked_before_any_job(tmp_path, screen, cpa, fragment):
    """The screen exists when the job graph is built: its drugs are read from the
    perturbation column alone, and a drug name it lacks stops the run before any job."""
    assert_refused_before_any_job(tmp_path, screen, cpa, fragment)


def test_the_check_rule_checks_the_named_drugs_of_a_screen_made_by_the_workflow(tmp_path, screen):
    """A screen the workflow generates does not exist when the job graph is built: the
    check rule checks the dose-response drugs (and the counterfactuals') instead."""
    with pytest.raises(InputError, match=r"cpa.dose_response.drugs names \['drug99'\]"):
        check(tmp_path, screen, {"dose_response": {"drugs": ["drug99"]}})


# --- damaged intermediate files (deleted or truncated by hand, or a full disk elsewhere) --


def test_missing_or_empty_cpa_shard_at_merge(tmp_path, screen):
    path = tmp_path / "screen.h5ad"
    screen.write_h5ad(path)
    shards = []
    for k, (start, stop) in enumerate([(0, 100), (100, 200), (200, 300)]):
        shards.append(tmp_path / f"shard-{k}.npz")
        np.savez(shards[-1], start=start, stop=stop, z_basal=np.zeros((stop - start, 2), np.float32),
                 z=np.zeros((stop - start, 2), np.float32), z_corrected=np.zeros((stop - start, 2), np.float32))
    with pytest.raises(InputError, match="shard-2.npz' starts at row 200, expected 100"):
        merge_latents(path, [shards[0], shards[2]], tmp_path / "latents.h5ad")
    with pytest.raises(InputError, match="the shards cover rows 0-200 of 300; rerun the missing shards"):
        merge_latents(path, shards[:2], tmp_path / "latents.h5ad")
    shards[1].write_bytes(b"")
    with pytest.raises(InputError, match="shard-1.npz' is empty or damaged"):
        merge_latents(path, shards, tmp_path / "latents.h5ad")
    assert not (tmp_path / "latents.h5ad").exists()


@pytest.mark.parametrize("counterfactuals, fragment", [
    ([{"perturbation": "drug04"}], "cpa.counterfactuals[0] ('drug04') has no dosage"),
    ([{"perturbation": "drug04", "dosage": "1"}, {"perturbation": "drug05", "dosage": "1", "name": "drug04_at_1"}],
     "cpa.counterfactuals has two entries named 'drug04_at_1'"),
    ([{"perturbation": "drug04", "dosage": "1", "name": "d4"}, {"perturbation": "drug05", "dosage": "1", "name": "D4"}],
     "cpa.counterfactuals: the names 'd4' and 'D4' differ only in upper and lower case"),
    ([{"perturbation": "drug04 + drug05", "dosage": "1+1"}],
     "cpa.counterfactuals[0]: its output would be named 'drug04 + drug05_at_1+1' (from its perturbation and "
     "dosage), but names may hold only letters, digits"),
])
def test_counterfactual_entries_are_checked_when_the_job_graph_is_built(tmp_path, screen, counterfactuals,
                                                                      fragment):
    assert_refused_before_any_job(tmp_path, screen, {"counterfactuals": counterfactuals}, fragment)


def test_early_stopping_without_validation_cells_stops_the_check(tmp_path, screen):
    """A split column with train and test cells only: early stopping has nothing to score,
    which the training would find after the check; the check says so, in the workflow's
    terms."""
    labels = np.where(screen.obs["condition"].astype(str) == "drug00+drug01", "test", "train")
    data = with_obs(screen, "split", labels)
    with pytest.raises(InputError) as info:
        check(tmp_path, data, {"split_key": "split", "holdout": [], "train": {"seed": 0, "early_stopping": True}})
    text = str(info.value)
    assert "cpa.train.early_stopping is true, but the split has 0 validation cell(s)" in text
    assert "label at least 20 cells 'valid' in obs['split']" in text and "early_stopping: false" in text
    check(tmp_path, data, {"split_key": "split", "holdout": [], "train": {"seed": 0, "early_stopping": False}})


def test_a_split_without_train_cells(tmp_path, screen):
    data = with_obs(screen, "split", ["test"] * screen.n_obs)
    with pytest.raises(InputError, match="no cell is in the train split; check cpa.split_key or cpa.holdout"):
        check(tmp_path, data, {"split_key": "split"})


# --- what a model could not have learnt, and cells without counts ----------------------

@pytest.mark.parametrize("cfg, untrained, uses", [
    ({"holdout": ["drug03", "drug02+drug03"]}, "['drug03']", "'drug02+drug03', 'drug03'"),
    ({"holdout": ["drug00+drug01", "drug02+drug03", "drug02", "drug03"],
      "counterfactuals": [{"perturbation": "drug03+drug05", "dosage": "1+1"}]},
     "['drug02', 'drug03']", "cpa.counterfactuals[0] (drug03+drug05)"),
])
def test_a_holdout_that_leaves_a_drug_untrained_stops_before_training(tmp_path, screen, cfg, untrained, uses):
    with pytest.raises(InputError) as info:
        check(tmp_path, screen, cfg)
    text = str(info.value)
    assert f"cpa.holdout (and the random valid split) leaves drug(s) {untrained} without any training cell" in text
    assert uses in text and "Hold out fewer conditions" in text


def test_every_non_control_condition_held_out_by_the_split_key(tmp_path, screen):
    split = np.where(screen.obs["condition"].astype(str) == "control", "train", "test")
    with pytest.raises(InputError, match=r"obs\['split'\] leaves drug\(s\) \['drug00', 'drug01', .*without any "
                                         r"training cell"):
        check(tmp_path, with_obs(screen, "split", split), {"split_key": "split"})


def test_training_refuses_an_untrained_drug_too(tmp_path, screen):
    from shardmap.cpa.splits import assign_splits

    with pytest.raises(InputError, match=r"leaves drug\(s\) \['drug03'\] without any training cell"):
        assign_splits(screen.obs, {**CFG, "holdout": ["drug03", "drug02+drug03"]})


def test_cells_without_counts_stop_the_check_with_their_number(tmp_path, screen):
    data = screen.copy()
    X = data.X.toarray() if sparse.issparse(data.X) else np.asarray(data.X).copy()
    X[[3, 150, 299]] = 0
    data.X = sparse.csr_matrix(X)
    text = f"cpa.adata '{tmp_path / 'screen.h5ad'}' X has 3 cell(s) whose counts are all 0 (the first is " \
           f"'{data.obs_names[3]}')"
    with pytest.raises(InputError) as info:
        check(tmp_path, data)  # in chunks of 100 rows: the three cells lie in three chunks
    assert text in str(info.value) and "scanpy.pp.filter_cells(adata, min_counts=1)" in str(info.value)
    with pytest.raises(InputError, match="has 3 cell"):
        check_values(data.X, True, where="X", obs_names=data.obs_names, rows_per_chunk=100)
    check(tmp_path, data, {"model": {"recon_loss": "gauss"}})  # log-normalised data may hold empty cells


def test_a_dose_that_is_nan_names_the_dose_column(tmp_path, screen):
    doses = screen.obs["dose"].astype(str).to_numpy().copy()
    doses[np.flatnonzero(~screen.obs["condition"].astype(str).str.contains(r"\+|control"))[0]] = "nan"
    with pytest.raises(InputError, match=r"^obs\['dose'\]: dosage 'nan' of condition '.*': dose nan must be finite"):
        check(tmp_path, with_obs(screen, "dose", doses))


# --- a covariate category that no training cell has ------------------------------------

def rare_in_holdout(screen):
    """Every cell of the held-out combination drug00+drug01 (and no other) of cell type 'rare'."""
    held = np.array([set(c.split("+")) == {"drug00", "drug01"} for c in screen.obs["condition"].astype(str)])
    types = screen.obs["cell_type"].astype(str).to_numpy().copy()
    types[held] = "rare"
    return with_obs(screen, "cell_type", types), int(held.sum())


def test_a_covariate_category_seen_only_in_held_out_cells_is_refused(tmp_path, screen):
    data, n_held = rare_in_holdout(screen)
    with pytest.raises(InputError) as info:
        check(tmp_path, data)
    text = str(info.value)
    assert f"leaves covariate categor(ies) obs['cell_type'] ['rare'] without any training cell ({n_held} cells: " \
           f"test {n_held})" in text
    assert "cpa.unseen_covariates: exclude" in text


def test_unseen_covariates_exclude_keeps_those_cells_out_of_training_and_evaluation(tmp_path, screen):
    """With the opt-in the check passes, the split labels those cells excluded, the model
    trains without them, and metrics.tsv lists their groups as not evaluated while the
    other held-out groups are."""
    from shardmap.cpa.tasks.evaluate import evaluate
    from shardmap.cpa.tasks.train import train_model

    data, n_held = rare_in_holdout(screen)
    cfg = {**CFG, "counterfactuals": [], "unseen_covariates": "exclude",
           "holdout": ["drug00+drug01", "drug02+drug03"], "model": {"recon_loss": "nb", "n_latent": 4, "n_hidden": 16},
           "train": {"seed": 0, "max_epochs": 1, "batch_size": 64}}
    summary = check(tmp_path, data, cfg)
    assert summary["excluded_cells"] == n_held
    path = tmp_path / "screen.h5ad"
    train_model(path, cfg, tmp_path / "model", tmp_path / "splits.tsv", accelerator="cpu")
    splits = pd.read_csv(tmp_path / "splits.tsv", sep="\t", index_col=0)["split"]
    assert (splits[data.obs["cell_type"].astype(str) == "rare"] == "excluded").all()
    assert (splits == "excluded").sum() == n_held
    rows = evaluate(tmp_path / "model", path, cfg, tmp_path / "splits.tsv", tmp_path / "metrics.tsv")
    assert rows and all(row["covariates"] != "rare" for row in rows)
    table = pd.read_csv(tmp_path / "metrics.tsv", sep="\t", keep_default_na=False)
    noted = table[table["note"] != ""]
    assert list(noted["covariates"].unique()) == ["rare"] and noted["n_cells"].sum() == n_held
    assert (noted["r2_mean_deg20"] == "").all()
    assert set(table[table["note"] == ""]["condition"]) == {"drug02+drug03"}


def test_a_category_only_in_validation_cells_is_refused_too(tmp_path, screen):
    """A rare cell type whose few cells all fell in the validation split (here by the split
    column): its embedding would be untrained, and the model selection would score it."""
    labels = np.where(np.arange(screen.n_obs) % 7 == 0, "valid", "train").astype(object)
    types = screen.obs["cell_type"].astype(str).to_numpy().copy()
    rare = np.flatnonzero(labels == "valid")[:3]
    types[rare] = "rare"
    data = with_obs(with_obs(screen, "split", labels), "cell_type", types)
    with pytest.raises(InputError) as info:
        check(tmp_path, data, {"split_key": "split", "holdout": []})
    assert "obs['split'] leaves covariate categor(ies) obs['cell_type'] ['rare'] without any training cell (3 cells: " \
           "valid 3)" in str(info.value)
