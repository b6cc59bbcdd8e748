"""The fast float32 pieces of the mapping kernel against float64 NumPy."""

import numpy as np

from shardmap.mapping import FLOAT64_ABOVE, fisher_z_inplace


def test_fisher_z_matches_arctanh_on_its_range():
    r = np.linspace(-FLOAT64_ABOVE, FLOAT64_ABOVE, 200_001).astype(np.float32).reshape(1, -1)
    expected = np.arctanh(r.astype(np.float64))
    z = fisher_z_inplace(r.copy(), np.empty_like(r))
    assert np.abs(z - expected).max() < 2e-7
    assert z[0, 100_000] == 0.0
