"""Which null lesions a run makes: their ids, and the real lesion each is made from.

Standard library only: the rules read the plan while the job graph is built.
"""

from __future__ import annotations

import math

NULL_METHODS = ("shift", "sphere")


def nulls_per_lesion(n_null, n_lesions):
    """Null lesions made from each real lesion: n / (number of lesions), rounded up."""
    return max(1, math.ceil(n_null / max(n_lesions, 1)))


def null_lesion_id(source_id, index):
    return f"{source_id}.null{index:04d}"


def null_plan(lesions, n_null):
    """(null id, source id, group, index) of every null lesion, source by source in sheet
    order; ``lesions``: (lesion id, group) pairs of the real lesions."""
    per_lesion = nulls_per_lesion(n_null, len(lesions))
    return [(null_lesion_id(lesion_id, k), lesion_id, group, k) for lesion_id, group in lesions
            for k in range(per_lesion)]
