"""Threshold-free cluster enhancement (Smith and Nichols 2009) of a map on the mask grid.

nilearn's implementation (the one its ``permuted_ols`` uses: E = 0.5, H = 2, 100 height
steps, faces connectivity, both signs) does the work; this module only moves mask-ordered
values to the volume and back. nilearn keeps the function in a private module, which is
why requirements.txt pins nilearn exactly.
"""

from __future__ import annotations

import numpy as np


def tfce_of_map(values, mask):
    """Two-sided TFCE of mask-ordered ``values`` (signed like them), mask-ordered."""
    from nilearn.mass_univariate._utils import calculate_tfce
    from scipy.ndimage import generate_binary_structure

    volume = mask.to_volume(np.asarray(values, dtype=np.float64), dtype=np.float64)
    enhanced = calculate_tfce(volume[..., np.newaxis], bin_struct=generate_binary_structure(3, 1),
                              two_sided_test=True)
    return enhanced[..., 0].ravel(order="C")[mask.flat_index]
