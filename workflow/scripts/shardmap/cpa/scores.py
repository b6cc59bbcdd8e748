"""Scores of predictions (NumPy and SciPy only, so the figure rules can use them without PyTorch).

Besides ``r_squared``, the perturbation-prediction metrics of the Virtual Cell Challenge's
``cell-eval`` (0.8.2) and PerturBench, with cell-eval's definitions: ``pearson_delta``,
``mean_absolute_error`` (its ``mae``), ``discrimination_scores`` (its
``discrimination_score`` with metric "l1") and ``e_distance`` (the energy distance of its
``pearson_edistance``, pairs i=j included). ``tests/cpa/test_cpa_scores.py`` checks each
against cell-eval on the same inputs.

DE genes differ from cell-eval's: ``top_changed_genes`` (and so ``de_overlap`` and
``direction_agreement``) ranks all genes by |mean - control|, as our top-20-DEG R^2 does,
while cell-eval keeps only the genes that pass a Wilcoxon rank-sum (Mann-Whitney U) test of
the cells against the control cells (pdex, FDR < 0.05) and ranks those by |log2 fold change|
of the means; its ``de_direction_match`` takes all significant genes, not the top k. The two agree when every gene counts as significant and the fold change is
the mean change (the test feeds cell-eval such a table).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def r_squared(predicted, observed):
    """1 - residual / total sum of squares of ``observed`` (NaN when observed is constant)."""
    residual = ((observed - predicted) ** 2).sum()
    total = ((observed - observed.mean()) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else float("nan")


def _select(genes, *arrays):
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"shapes differ: {[a.shape for a in arrays]}")
    if genes is None:
        return arrays
    genes = np.asarray(genes)
    return [a[..., genes] for a in arrays]


def _is_constant(delta, *terms):
    """Whether ``delta`` (a difference of ``terms``) varies by no more than its round-off."""
    scale = max(float(np.max(np.abs(t))) for t in terms)
    return bool(np.ptp(delta) <= 16 * np.finfo(np.float64).eps * scale)


def pearson_delta(predicted, observed, control, genes=None) -> float:
    """Pearson correlation of predicted - control with observed - control over ``genes``
    (all by default); NaN when either change is constant, e.g. a no-change prediction.

    A change that is constant up to the round-off of the subtraction (a constant shift)
    counts as constant too, where scipy's pearsonr (cell-eval's) returns a number made of
    round-off.
    """
    predicted, observed, control = _select(genes, predicted, observed, control)
    dx, dy = predicted - control, observed - control
    if dx.size < 2 or _is_constant(dx, predicted, control) or _is_constant(dy, observed, control):
        return float("nan")
    with np.errstate(all="ignore"):
        dx, dy = dx - dx.mean(), dy - dy.mean()
        return float(np.dot(dx, dy) / np.sqrt(np.dot(dx, dx) * np.dot(dy, dy)))


def mean_absolute_error(predicted, observed, genes=None) -> float:
    """Mean |predicted - observed| over ``genes`` (all by default): cell-eval's ``mae`` of
    pseudobulk means."""
    predicted, observed = _select(genes, predicted, observed)
    return float(np.mean(np.abs(predicted - observed)))


def _mean_distance(a, b, block_rows):
    """Mean Euclidean distance over all pairs (a_i, b_j), rows of ``a`` taken in blocks."""
    a_sq, b_sq = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    minus_2b = -2.0 * b.T  # scaling by a power of two is exact
    total = 0.0
    for start in range(0, a.shape[0], block_rows):
        block, block_sq = a[start:start + block_rows], a_sq[start:start + block_rows, None]
        sq = block @ minus_2b
        sq += block_sq
        sq += b_sq
        # |a|^2 + |b|^2 - 2ab cancels for close pairs (identical rows give round-off, not 0,
        # and it can be negative): pairs closer than 1% of their norms are recomputed from
        # their differences, which also keeps the sqrt off every negative round-off.
        limit = np.add(block_sq, b_sq)
        limit *= 1e-4
        rows, cols = np.nonzero(sq <= limit)
        for s in range(0, rows.size, block_rows):
            r, c = rows[s:s + block_rows], cols[s:s + block_rows]
            diff = block[r] - b[c]
            sq[r, c] = np.einsum("ij,ij->i", diff, diff)
        total += np.sqrt(sq, out=sq).sum()
    return total / (a.shape[0] * b.shape[0])


def e_distance(x, y, block_rows=1024) -> float:
    """Energy distance between samples ``x`` and ``y`` (cells as rows, features as columns):
    2 mean d(x_i, y_j) - mean d(x_i, x_j) - mean d(y_i, y_j), Euclidean, every mean over all
    pairs including i = j (cell-eval's convention: identical samples give exactly 0).

    float64, in blocks of ``block_rows`` rows: memory O(block_rows x n), not O(n^2).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"e_distance needs two non-empty cells x features matrices, got {x.shape} and {y.shape}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    # Distances do not change under a shift; centring on the pooled mean makes the norms in
    # the |a|^2 + |b|^2 - 2ab expansion small, and with them its round-off.
    centre = (x.sum(axis=0) + y.sum(axis=0)) / (len(x) + len(y))
    x, y = x - centre, y - centre
    between = _mean_distance(x, y, block_rows)
    return float(2.0 * between - _mean_distance(x, x, block_rows) - _mean_distance(y, y, block_rows))


def top_changed_genes(mean, control, k) -> np.ndarray:
    """Indices of the ``k`` genes with the largest |mean - control| (largest first, ties by
    gene index; ``k`` capped at the gene count)."""
    mean, control = _select(None, mean, control)
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    order = np.argsort(-np.abs(mean - control), kind="stable")
    return order[:min(int(k), order.size)]


def _capped_k(k, n_genes):
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(int(k), n_genes)


def _no_predicted_change(predicted, control):
    """True for a prediction of no change at all (the no-change baseline): its top genes
    would be a tie broken by gene index, and its directions all 0."""
    return not np.any(np.asarray(predicted, dtype=np.float64) - np.asarray(control, dtype=np.float64))


def de_overlap(predicted, observed, control, k=20) -> float:
    """Share of the observed top-``k`` changed genes (``top_changed_genes``) that are also
    among the predicted top ``k``; ``k`` capped at the gene count. NaN for a prediction of
    no change (its top genes would be the first ``k`` by index)."""
    k = _capped_k(k, np.size(observed))
    if _no_predicted_change(predicted, control):
        return float("nan")
    shared = np.intersect1d(top_changed_genes(predicted, control, k), top_changed_genes(observed, control, k))
    return shared.size / k


def direction_agreement(predicted, observed, control, k=20) -> float:
    """Among the observed top-``k`` changed genes, the share whose predicted change has the
    sign of the observed change (sign 0 matches only 0). NaN for a prediction of no change."""
    predicted, observed, control = _select(None, predicted, observed, control)
    top = top_changed_genes(observed, control, _capped_k(k, observed.size))
    if _no_predicted_change(predicted, control):
        return float("nan")
    return float(np.mean(np.sign(predicted[top] - control[top]) == np.sign(observed[top] - control[top])))


def discrimination_scores(predicted_effects, observed_effects) -> np.ndarray:
    """One score per group (row; effects are mean - control, genes as columns): 1 - rank / n,
    rank being the place of the group's own observed effect among all observed effects,
    sorted by L1 distance to its predicted effect (0: nearest). cell-eval's
    ``discrimination_score`` with metric "l1"; 1 is a perfect predictor.

    ``observed_effects`` may have more rows than ``predicted_effects``: row p of each is
    group p, and the extra observed rows are groups the predictor does not predict (a
    baseline undefined there), which still compete for the rank; n is the observed rows."""
    predicted = np.asarray(predicted_effects, dtype=np.float64)
    observed = np.asarray(observed_effects, dtype=np.float64)
    if predicted.ndim != 2 or observed.ndim != 2 or predicted.shape[1] != observed.shape[1]:
        raise ValueError(f"effects must be groups x genes with the same genes, got shapes {predicted.shape} and "
                         f"{observed.shape}")
    if observed.shape[0] < predicted.shape[0]:
        raise ValueError(f"{predicted.shape[0]} predicted groups but only {observed.shape[0]} observed")
    n = observed.shape[0]
    distances = cdist(predicted, observed, "cityblock")
    scores = np.empty(predicted.shape[0])
    for p in range(predicted.shape[0]):
        # np.argsort's default kind as cell-eval uses it, so exact ties fall where they fall there.
        rank = np.flatnonzero(np.argsort(distances[p]) == p)[0]
        scores[p] = 1.0 - rank / n
    return scores
