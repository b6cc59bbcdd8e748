"""Which null lesions a run makes: their ids, and the real lesion each is made from.

Standard library only: the rules read the plan while the job graph is built.
"""

from __future__ import annotations

import math

from ...errors import InputError

NULL_METHODS = ("shift", "sphere")
# A null group takes one of each real lesion's k null lesions, so its spread is that of k
# draws: (k - 1) / k of the true variance. Below 10 per lesion the percentile maps would
# be too narrow (with k = 1 every null group is the same).
MIN_NULLS_PER_LESION = 10


def nulls_per_lesion(n_null, n_lesions):
    """Null lesions made from each real lesion: n / (number of lesions), rounded up."""
    return max(1, math.ceil(n_null / max(n_lesions, 1)))


def null_lesion_id(source_id, index):
    return f"{source_id}.null{index:04d}"


def check_nulls_per_lesion(per_lesion, n_lesions):
    if per_lesion < MIN_NULLS_PER_LESION:
        raise InputError(
            f"lnm.null_lesions.n gives {per_lesion} null lesion(s) per lesion for {n_lesions} lesions; the null "
            f"groups behind the percentile maps need at least {MIN_NULLS_PER_LESION} per lesion (with k, their "
            f"spread is (k - 1) / k of the true one). Set lnm.null_lesions.n to at least "
            f"{MIN_NULLS_PER_LESION * n_lesions}.")


def null_plan(lesions, n_null):
    """(null id, source id, group, index) of every null lesion, source by source in sheet
    order; ``lesions``: (lesion id, group) pairs of the real lesions. InputError when that
    gives fewer than MIN_NULLS_PER_LESION per lesion."""
    per_lesion = nulls_per_lesion(n_null, len(lesions))
    check_nulls_per_lesion(per_lesion, len(lesions))
    return [(null_lesion_id(lesion_id, k), lesion_id, group, k) for lesion_id, group in lesions
            for k in range(per_lesion)]
