"""The baselines of cpa_evaluate (no change, additive, train mean) and the scores written
beside the model's, against computations written here from the file and splits.tsv."""

import csv

import numpy as np
import pandas as pd
import pytest
import scvi
from scipy.spatial.distance import cdist

from shardmap.cpa.baselines import additive_shift
from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.evaluate import evaluate, metric_columns
from shardmap.cpa.tasks.train import train_model

CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "split_key": None,
       "model": {"n_latent": 8, "n_hidden": 16, "recon_loss": "nb"},
       "train": {"max_epochs": 2, "batch_size": 256, "seed": 0}}


def test_additive_is_exact_on_an_additive_truth():
    rng = np.random.default_rng(0)
    control = rng.normal(size=50)
    effect = {"A": rng.normal(size=50), "B": rng.normal(size=50)}
    singles = {("A", "1", "t0"): control + effect["A"], ("B", "0.5", "t0"): control + 0.5 * effect["B"]}
    shift, note = additive_shift("A+B", "1+0.5", "t0", control, singles)
    np.testing.assert_allclose(control + shift, control + effect["A"] + 0.5 * effect["B"], atol=1e-12)
    assert note == ""
    # B at dose 1 was never seen alone: undefined, and the note names it.
    shift, note = additive_shift("A+B", "1+1", "t0", control, singles)
    assert shift is None and "B at 1" in note and "t0" in note


def log_normalised(counts):
    counts = np.asarray(counts, dtype=np.float64)
    return np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4)


def r2(p, o):
    return 1 - ((o - p) ** 2).sum() / ((o - o.mean()) ** 2).sum()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baselines")
    adata = simulate_screen(n_cells=1500, n_genes=30, seed=2)
    del adata.uns["truth"]
    path = folder / "screen.h5ad"
    adata.write_h5ad(path)
    # drug06 is held out alone: its groups have no single drug to add up.
    cfg = {**CFG, "holdout": ["drug00+drug01", "drug06"]}
    scvi.settings.seed = 0
    train_model(path, cfg, folder / "model", folder / "splits.tsv", accelerator="cpu")
    evaluate(folder / "model", path, cfg, folder / "splits.tsv", folder / "metrics.tsv",
             chunk_rows=400, block_rows=128, means_path=folder / "means.npz")
    table = pd.read_csv(folder / "metrics.tsv", sep="\t", keep_default_na=False, dtype=str)
    splits = pd.read_csv(folder / "splits.tsv", sep="\t", index_col=0)["split"]
    return adata, splits, table, folder


def cells_of(adata, mask):
    return log_normalised(adata.X[np.flatnonzero(mask)].toarray())


def test_metrics_hold_every_baseline_column(evaluated):
    _, _, table, folder = evaluated
    header = open(folder / "metrics.tsv").readline().rstrip("\n").split("\t")
    assert header == metric_columns(["cell_type"])
    for baseline in ("no_change", "additive", "train_mean"):
        for score in ("r2_mean_deg20", "pearson_delta_all", "pearson_delta_deg20", "mae_all", "e_distance",
                      "deg_overlap20", "deg_direction20", "discrimination"):
            assert f"{baseline}_{score}" in header


def test_baselines_equal_an_independent_computation(evaluated):
    adata, splits, table, _ = evaluated
    obs = adata.obs.astype(str)
    training = (splits.loc[adata.obs_names] == "train").to_numpy()
    # Every group of this small screen has fewer cells than the caps (2000 controls, 500
    # cells for the E-distance), so every cell counts and nothing is sampled.
    for _, row in table.iterrows():
        cell_type = row["covariates"]
        same = (obs["cell_type"] == cell_type).to_numpy()
        control = cells_of(adata, same & (obs["condition"] == "control").to_numpy())
        drugs, doses = row["condition"].split("+"), row["dosage"].split("+")
        canonical = obs["condition"].map(lambda c: "+".join(sorted(c.split("+"))))
        in_group = (canonical == row["condition"]).to_numpy() & same & (splits.loc[adata.obs_names] == "test").to_numpy()
        # The group's dosage in canonical drug order; the file may list the drugs reversed.
        group = in_group & np.array([
            "+".join(dose for _, dose in sorted(zip(c.split("+"), d.split("+")))) == row["dosage"]
            for c, d in zip(obs["condition"], obs["dose"])])
        observed = cells_of(adata, group)
        assert observed.shape[0] == int(row["n_cells"])
        o, c = observed.mean(0), control.mean(0)
        degs = np.argsort(-np.abs(o - c), kind="stable")[:20]
        assert row["deg20"].split(",") == list(adata.var_names[degs])
        # no change: the control cells
        assert float(row["no_change_r2_mean_deg20"]) == pytest.approx(r2(c[degs], o[degs]), abs=1e-5)
        assert float(row["no_change_mae_all"]) == pytest.approx(np.abs(c - o).mean(), abs=1e-5)
        ed = 2 * cdist(control, observed).mean() - cdist(control, control).mean() - cdist(observed, observed).mean()
        assert float(row["no_change_e_distance"]) == pytest.approx(ed, rel=1e-4)
        assert row["no_change_pearson_delta_all"] == "NA"
        assert row["no_change_deg_overlap20"] == "NA" and row["no_change_deg_direction20"] == "NA"
        # train mean: every perturbed training cell of the cell type
        perturbed = cells_of(adata, training & same & (obs["condition"] != "control").to_numpy())
        t = perturbed.mean(0)
        ed = 2 * cdist(perturbed, observed).mean() - cdist(perturbed, perturbed).mean() - \
            cdist(observed, observed).mean()
        assert float(row["train_mean_e_distance"]) == pytest.approx(ed, rel=1e-4)
        assert float(row["train_mean_r2_mean_all"]) == pytest.approx(r2(t, o), abs=1e-5)
        assert float(row["train_mean_pearson_delta_deg20"]) == pytest.approx(
            np.corrcoef(t[degs] - c[degs], o[degs] - c[degs])[0, 1], abs=1e-5)
        # additive: control plus each single drug's shift at its dose, from training cells
        if len(drugs) == 1:
            assert row["additive_r2_mean_deg20"] == "NA" and "drug06" in row["additive_note"]
            continue
        shift = np.zeros_like(c)
        for drug, dose in zip(drugs, doses):
            single = training & same & (obs["condition"] == drug).to_numpy() & (obs["dose"] == dose).to_numpy()
            shift += cells_of(adata, single).mean(0) - c
        a = c + shift
        assert float(row["additive_r2_mean_deg20"]) == pytest.approx(r2(a[degs], o[degs]), abs=1e-5)
        assert float(row["additive_pearson_delta_all"]) == pytest.approx(np.corrcoef(a - c, o - c)[0, 1], abs=1e-5)
        moved = np.maximum(control + shift, 0)  # log-normalised counts stop at 0
        ed = 2 * cdist(moved, observed).mean() - cdist(moved, moved).mean() - cdist(observed, observed).mean()
        assert float(row["additive_e_distance"]) == pytest.approx(ed, rel=1e-4)
        assert row["additive_note"] == ""
        top_additive = set(np.argsort(-np.abs(a - c), kind="stable")[:20])
        assert float(row["additive_deg_overlap20"]) == pytest.approx(len(top_additive & set(degs)) / 20)
        assert float(row["additive_deg_direction20"]) == pytest.approx(
            np.mean(np.sign(a[degs] - c[degs]) == np.sign(o[degs] - c[degs])))


def test_discrimination_ranks_each_group_among_the_groups_of_its_covariates(evaluated):
    _, _, table, folder = evaluated
    # By brute force from the means cpa_evaluate would save: the train-mean baseline's
    # change against every observed change of the same cell type, ranked by L1 distance.
    saved = np.load(folder / "means.npz")
    for cell_type in set(saved["covariates"]):
        rows = np.flatnonzero(saved["covariates"] == cell_type)
        observed = saved["observed"][rows] - saved["control"][rows]
        predicted = saved["train_mean"][rows] - saved["control"][rows]
        for position, row in enumerate(rows):
            distances = np.abs(observed - predicted[position]).sum(1)
            expected = 1 - list(np.argsort(distances)).index(position) / len(rows)
            line = table[(table["condition"] == saved["condition"][row]) & (table["dosage"] == saved["dosage"][row])
                         & (table["covariates"] == cell_type)]
            assert float(line["train_mean_discrimination"].iloc[0]) == pytest.approx(expected)
    # An undefined baseline (additive on drug06 alone) has no score, the others lie in (0, 1].
    for column in ("discrimination", "train_mean_discrimination", "additive_discrimination"):
        values = table[column].replace("NA", "nan").astype(float)
        defined = values.dropna()
        assert ((defined > 0) & (defined <= 1)).all(), column
    assert table.loc[table["condition"] == "drug06", "additive_discrimination"].eq("NA").all()
    # No change predicts a zero change for every group: a group's rank is that of its
    # observed change's L1 norm among those of its cell type.
    for _, same in table.groupby("covariates"):
        scores = same["no_change_discrimination"].astype(float).to_numpy()
        assert np.isfinite(scores).all() and len(set(scores)) == len(scores)


def test_metrics_file_is_tab_separated_with_na(evaluated):
    _, _, _, folder = evaluated
    rows = list(csv.DictReader(open(folder / "metrics.tsv"), delimiter="\t"))
    assert rows and all("nan" not in value for row in rows for value in row.values())
