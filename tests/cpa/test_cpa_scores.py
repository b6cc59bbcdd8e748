"""The perturbation-prediction scores of shardmap.cpa.scores: planted data with known
answers, independent computations (scipy's cdist, brute-force ranks), and the same numbers
as cell-eval 0.8.2 (pinned in requirements.txt) on the same random inputs."""

import tracemalloc
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from shardmap.cpa.scores import (de_overlap, direction_agreement, discrimination_scores, e_distance,
                                 mean_absolute_error, pearson_delta, top_changed_genes)


def test_pearson_delta_of_a_scaled_a_negated_and_a_missing_change():
    rng = np.random.default_rng(0)
    control, observed = rng.normal(size=50), rng.normal(size=50)
    assert pearson_delta(control + 3.0 * (observed - control), observed, control) == pytest.approx(1.0, abs=1e-12)
    assert pearson_delta(control - 0.5 * (observed - control), observed, control) == pytest.approx(-1.0, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN, not a RuntimeWarning
        assert np.isnan(pearson_delta(control, observed, control))  # the no-change baseline
        assert np.isnan(pearson_delta(control + 0.1, observed, control))  # a constant shift
        assert np.isnan(pearson_delta(observed, control, control))  # nothing observed to change


def test_pearson_delta_over_a_gene_subset():
    rng = np.random.default_rng(1)
    control, observed, predicted = rng.normal(size=(3, 40))
    genes = np.array([3, 7, 8, 20, 31, 39])
    dx, dy = predicted[genes] - control[genes], observed[genes] - control[genes]
    expected = ((dx - dx.mean()) * (dy - dy.mean())).sum() / np.sqrt(((dx - dx.mean()) ** 2).sum()
                                                                      * ((dy - dy.mean()) ** 2).sum())
    assert pearson_delta(predicted, observed, control, genes=genes) == pytest.approx(expected, abs=1e-12)
    # Exact on the subset, not elsewhere: the subset alone decides.
    planted = predicted.copy()
    planted[genes] = control[genes] + 2.0 * (observed[genes] - control[genes])
    assert pearson_delta(planted, observed, control, genes=genes) == pytest.approx(1.0, abs=1e-12)
    assert pearson_delta(planted, observed, control) < 0.99


def test_mean_absolute_error_by_hand():
    predicted, observed = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 1.0, 8.0])
    assert mean_absolute_error(predicted, observed) == 7.0 / 4.0  # |-1| + 0 + 2 + |-4|
    assert mean_absolute_error(predicted, observed, genes=[0, 3]) == 5.0 / 2.0
    assert mean_absolute_error(predicted, predicted) == 0.0


def energy_by_cdist(x, y):
    """2 E d(x, y) - E d(x, x') - E d(y, y'), every pair (i = j too) in the means."""
    return 2.0 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()


def test_e_distance_of_identical_samples_is_zero():
    x = np.random.default_rng(2).normal(size=(80, 12)) + 5.0
    assert e_distance(x, x) == 0.0
    assert e_distance(x, x.copy(), block_rows=7) == 0.0
    # The same cells in another order are the same sample.
    assert abs(e_distance(x, x[::-1], block_rows=9)) < 1e-12


@pytest.mark.parametrize("nx, ny, features, block_rows, offset", [
    (30, 45, 5, 7, 0.0),  # blocks that do not divide the rows
    (1, 50, 3, 1, 0.0),  # one cell against many, one row per block
    (200, 150, 40, 64, 0.0),
    (60, 60, 8, 1024, 1e4),  # far from the origin: round-off of |a|^2 + |b|^2 - 2ab
    (25, 30, 1, 4, -3.0),
])
def test_e_distance_is_the_cdist_energy_distance(nx, ny, features, block_rows, offset):
    rng = np.random.default_rng(nx * 1000 + ny)
    x = rng.normal(size=(nx, features)) + offset
    y = 1.5 * rng.normal(size=(ny, features)) + offset + 0.3
    expected = energy_by_cdist(x, y)
    assert e_distance(x, y, block_rows=block_rows) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    assert e_distance(y, x, block_rows=block_rows) == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_e_distance_with_repeated_cells_is_exact():
    """Duplicate cells (count data often has them): their distance is 0, not round-off."""
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, size=(40, 6)).astype(float) + 1e3
    y = np.vstack([x[:10], rng.poisson(3.0, size=(20, 6)) + 1e3])
    assert e_distance(x, y, block_rows=16) == pytest.approx(energy_by_cdist(x, y), rel=1e-12, abs=1e-12)


def test_e_distance_grows_with_a_mean_shift():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(100, 10)), rng.normal(size=(120, 10))
    distances = [e_distance(x, y + shift) for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_e_distance_of_two_point_masses():
    """All of x at a, all of y at b: 2 |a - b| - 0 - 0, whatever the sample sizes."""
    for a, b, nx, ny in [(1.0, 4.0, 5, 7), (-2.5, 0.25, 1, 3), (7.0, 7.0, 4, 4)]:
        x, y = np.full((nx, 1), a), np.full((ny, 1), b)
        assert e_distance(x, y, block_rows=2) == pytest.approx(2.0 * abs(a - b), abs=1e-12)


def test_e_distance_memory_stays_in_blocks():
    """1500 x 1500 distances would take 18 MB; blocks of 50 rows need well under 5 MB."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(1500, 10)), rng.normal(size=(1500, 10)) + 0.2
    # One BLAS thread: on a busy 2-core machine OpenBLAS's threads wait for each other over
    # these thin products (measured: 2.2 s instead of 0.07 s).
    with threadpool_limits(limits=1, user_api="blas"):
        tracemalloc.start()
        try:
            e_distance(x, y, block_rows=50)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 5e6, peak


def test_top_changed_genes_breaks_ties_by_gene_index():
    control = np.array([5.0, 5.0, 5.0, 5.0, 5.0])
    mean = np.array([6.0, 2.0, 8.0, 5.0, 3.0])  # |changes| 1, 3, 3, 0, 2
    np.testing.assert_array_equal(top_changed_genes(mean, control, 3), [1, 2, 4])
    np.testing.assert_array_equal(top_changed_genes(mean, control, 10), [1, 2, 4, 0, 3])  # k capped
    assert top_changed_genes(mean, control, 0).size == 0
    assert np.issubdtype(top_changed_genes(mean, control, 2).dtype, np.integer)


def test_de_overlap_and_direction_on_planted_changes():
    control = np.zeros(8)
    observed = np.array([5.0, -4.0, 3.0, 0.1, 0.0, 0.2, 0.0, 0.0])  # top 3: genes 0, 1, 2
    predicted = np.array([2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0])  # top 3: genes 5, 1, 0
    assert de_overlap(predicted, observed, control, k=3) == pytest.approx(2.0 / 3.0)
    assert de_overlap(observed, observed, control, k=3) == 1.0
    assert de_overlap(predicted, observed, control, k=100) == 1.0  # every gene on both sides
    # Gene 0 agrees (+, +), gene 1 does not (+ against -), gene 2 does not (0 against +).
    assert direction_agreement(predicted, observed, control, k=3) == pytest.approx(1.0 / 3.0)
    assert direction_agreement(-observed, observed, control, k=3) == 0.0
    assert direction_agreement(observed * 0.01, observed, control, k=3) == 1.0


def brute_force_scores(predicted, observed):
    """1 - (number of observed effects strictly nearer in L1 than the group's own) / n."""
    n = len(predicted)
    scores = []
    for p in range(n):
        own = np.abs(predicted[p] - observed[p]).sum()
        nearer = sum(np.abs(predicted[p] - observed[q]).sum() < own for q in range(n) if q != p)
        scores.append(1.0 - nearer / n)
    return np.array(scores)


def test_discrimination_scores():
    rng = np.random.default_rng(6)
    observed = rng.normal(size=(9, 30))
    np.testing.assert_array_equal(discrimination_scores(observed, observed), np.ones(9))
    # Separate axes with distinct sizes: group 0's effect is the smallest, so a prediction
    # for group 1 that equals group 0's observed effect finds its own second.
    sizes = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    observed = np.diag(sizes)
    swapped = observed[[1, 0, 2, 3, 4]]
    np.testing.assert_allclose(discrimination_scores(swapped, observed), [0.8, 0.8, 1.0, 1.0, 1.0])
    predicted = observed + rng.normal(scale=2.0, size=observed.shape)
    np.testing.assert_allclose(discrimination_scores(predicted, observed), brute_force_scores(predicted, observed))
    noisy = rng.normal(size=(12, 20))
    predicted = noisy + rng.normal(scale=1.5, size=noisy.shape)
    np.testing.assert_allclose(discrimination_scores(predicted, noisy), brute_force_scores(predicted, noisy))


# Agreement with cell-eval 0.8.2 on one random screen: real and predicted cells of a
# control and six perturbations; the predicted control cells are the real ones, as in the
# Virtual Cell Challenge, so both sides share one control mean.
PERTS = ["non-targeting", "p0", "p1", "p2", "p3", "p4", "p5"]
N_GENES = 30


@pytest.fixture(scope="module")
def screen():
    rng = np.random.default_rng(7)
    shifts = {p: (rng.normal(scale=0.8, size=N_GENES) if p != PERTS[0] else np.zeros(N_GENES)) for p in PERTS}
    # A prediction error of each perturbation's own, large enough that some are mistaken
    # for another in the discrimination score.
    predicted_shifts = {p: 0.5 * shifts[p] + rng.normal(scale=1.5, size=N_GENES) for p in PERTS}
    labels = np.repeat(PERTS, 25)
    real = np.vstack([rng.normal(loc=shifts[p], size=N_GENES) for p in labels]) + 3.0
    pred = np.vstack([rng.normal(loc=predicted_shifts[p], size=N_GENES) for p in labels]) + 3.0
    control = labels == PERTS[0]
    pred[control] = real[control]
    return labels, real, pred


@pytest.fixture(scope="module")
def cell_eval_pair(screen):
    import anndata as ad
    import pandas as pd
    from cell_eval import PerturbationAnndataPair

    labels, real, pred = screen
    var = pd.DataFrame(index=[f"gene{i}" for i in range(N_GENES)])

    def adata(matrix):
        return ad.AnnData(X=matrix, obs=pd.DataFrame({"target": labels}, index=[f"c{i}" for i in range(len(labels))]),
                          var=var)

    return PerturbationAnndataPair(real=adata(real), pred=adata(pred), pert_col="target", control_pert=PERTS[0])


def group_means(labels, cells):
    return {p: cells[labels == p].mean(axis=0) for p in PERTS}


def test_pearson_delta_and_mae_are_cell_evals(screen, cell_eval_pair):
    from cell_eval.metrics import mae, pearson_delta as cell_eval_pearson_delta

    labels, real, pred = screen
    real_means, pred_means = group_means(labels, real), group_means(labels, pred)
    control = real_means[PERTS[0]]
    theirs_pearson, theirs_mae = cell_eval_pearson_delta(cell_eval_pair), mae(cell_eval_pair)
    assert sorted(theirs_pearson) == PERTS[1:]
    for p in PERTS[1:]:
        assert pearson_delta(pred_means[p], real_means[p], control) == pytest.approx(theirs_pearson[p], abs=1e-10)
        assert mean_absolute_error(pred_means[p], real_means[p]) == pytest.approx(theirs_mae[p], abs=1e-10)


def test_discrimination_scores_are_cell_evals(screen, cell_eval_pair):
    from cell_eval.metrics import discrimination_score

    labels, real, pred = screen
    real_means, pred_means = group_means(labels, real), group_means(labels, pred)
    control = real_means[PERTS[0]]
    observed = np.vstack([real_means[p] - control for p in PERTS[1:]])
    predicted = np.vstack([pred_means[p] - control for p in PERTS[1:]])
    theirs = discrimination_score(cell_eval_pair, metric="l1")
    ours = discrimination_scores(predicted, observed)
    np.testing.assert_allclose(ours, [theirs[p] for p in PERTS[1:]], atol=1e-10)
    assert ours.min() < 1.0  # the screen is noisy enough that not every rank is first


def test_e_distance_is_cell_evals(screen, cell_eval_pair):
    """cell-eval reports the Pearson correlation over perturbations of the real and the
    predicted E-distances to the control cells."""
    from cell_eval.metrics._anndata import edistance  # not exported by cell_eval.metrics

    labels, real, pred = screen
    control = labels == PERTS[0]
    d_real = [e_distance(real[labels == p], real[control]) for p in PERTS[1:]]
    d_pred = [e_distance(pred[labels == p], pred[control]) for p in PERTS[1:]]
    assert edistance(cell_eval_pair) == pytest.approx(np.corrcoef(d_real, d_pred)[0, 1], abs=1e-10)


def de_table(changes, significant):
    """A DE table in cell-eval's columns whose 'fold change' is the mean change."""
    import polars as pl

    rows = [(p, f"gene{g}", changes[p][g], 0.0 if g in significant[p] else 1.0)
            for p in changes for g in range(N_GENES)]
    target, feature, change, fdr = zip(*rows)
    return pl.DataFrame({"target": target, "feature": feature, "log2_fold_change": change, "p_value": fdr,
                         "fdr": fdr})


@pytest.fixture(scope="module")
def dyadic_changes():
    """Mean changes on a grid of 1/256 with distinct sizes: exact in cell-eval's float32
    and free of ties, so both sides rank the same."""
    rng = np.random.default_rng(8)
    control = rng.integers(0, 1024, size=N_GENES) / 256.0
    means = {}
    for p in PERTS[1:]:
        steps = rng.permutation(np.arange(1, N_GENES + 1)) * rng.choice([-1, 1], size=N_GENES)
        means[p] = control + steps / 256.0
    return control, means


@pytest.mark.filterwarnings("ignore:the string cache:DeprecationWarning")  # inside cell-eval, with polars 2
@pytest.mark.parametrize("k", [5, 12, 30])
def test_de_overlap_and_direction_are_cell_evals_on_mean_changes(dyadic_changes, k):
    """Fed a table where every gene is significant and the fold change is the mean change,
    cell-eval's overlap_at_k and de_direction_match (over the observed top k marked
    significant) give our numbers; with its own Wilcoxon DE they would not."""
    from cell_eval import DESortBy, initialize_de_comparison
    from cell_eval.metrics import DEDirectionMatch, de_overlap_metric

    control, observed = dyadic_changes
    rng = np.random.default_rng(k)
    # Predictions: the observed means with genes partly shuffled, so overlaps fall between 0 and 1.
    predicted = {}
    for p, mean in observed.items():
        order = np.arange(N_GENES)
        moved = rng.choice(N_GENES, size=N_GENES // 2, replace=False)
        order[moved] = rng.permutation(moved)
        predicted[p] = control + (mean - control)[order]
    real_changes = {p: observed[p] - control for p in observed}
    pred_changes = {p: predicted[p] - control for p in predicted}
    everything = {p: set(range(N_GENES)) for p in observed}

    comparison = initialize_de_comparison(de_table(real_changes, everything), de_table(pred_changes, everything))
    theirs = de_overlap_metric(comparison, k=k, metric="overlap", sort_by=DESortBy.ABS_LOG2_FOLD_CHANGE)
    ours = {p: de_overlap(predicted[p], observed[p], control, k=k) for p in observed}
    assert ours == pytest.approx(theirs, abs=1e-10)

    top = {p: set(top_changed_genes(observed[p], control, k).tolist()) for p in observed}
    comparison = initialize_de_comparison(de_table(real_changes, top), de_table(pred_changes, everything))
    theirs = DEDirectionMatch(fdr_threshold=0.05)(comparison)
    ours = {p: direction_agreement(predicted[p], observed[p], control, k=k) for p in observed}
    assert ours == pytest.approx(theirs, abs=1e-10)


def test_discrimination_with_groups_the_predictor_does_not_predict():
    """Observed rows beyond the predicted ones are groups without a prediction: they still
    compete for the rank, and n counts them."""
    observed = np.array([[0.0, 0.0], [1.0, 0.0], [0.9, 0.0], [5.0, 5.0]])
    predicted = np.array([[0.1, 0.0], [0.95, 0.0]])
    expected = []  # by brute force: the place of row p among all rows, sorted by L1 distance
    for p in range(2):
        distances = np.abs(observed - predicted[p]).sum(1)
        rank = list(np.argsort(distances)).index(p)
        expected.append(1 - rank / 4)
    np.testing.assert_allclose(discrimination_scores(predicted, observed), expected)
    assert discrimination_scores(predicted, observed)[0] == 1.0
    with pytest.raises(ValueError):
        discrimination_scores(observed, predicted)


def test_deg_scores_of_no_change_are_undefined():
    """No change predicts no gene changed: its 'top genes' would be the first k by index and
    its directions all 0, so both DEG scores are NaN rather than a number by chance."""
    rng = np.random.default_rng(3)
    control, observed = rng.normal(size=40), rng.normal(size=40)
    assert np.isnan(de_overlap(control, observed, control, k=10))
    assert np.isnan(direction_agreement(control, observed, control, k=10))
    # a change in a single gene is a prediction: scored
    moved = control.copy()
    moved[int(np.argmax(np.abs(observed - control)))] += 1.0
    assert de_overlap(moved, observed, control, k=10) >= 0.1
