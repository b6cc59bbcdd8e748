"""Scores of predictions (NumPy only, so the figure rules can use them without PyTorch)."""

from __future__ import annotations


def r_squared(predicted, observed):
    """1 - residual / total sum of squares of ``observed`` (NaN when observed is constant)."""
    residual = ((observed - predicted) ** 2).sum()
    total = ((observed - observed.mean()) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else float("nan")
