"""Honest cluster requests, the arithmetic both arms share: memory (MB) and runtime
(minutes) from a task's working set and expected seconds.

Standard library only: the formulas run in the Snakemake process when a job is
scheduled. Each arm's own formulas are in ``lnm.resources``, ``cpa.resources`` and
``report.resources``; all are documented in config/README.md.
"""

from __future__ import annotations

import json
import math

# Python, NumPy and nibabel loaded, before any data.
BASE_MB = 300
# A cluster job also holds Snakemake itself, twice: the process the executor starts in
# the job (slurm-jobstep) and the one it starts for the task, about 145 MB each
# (measured with Snakemake 9.27). The request covers the whole job, so it counts them.
SNAKEMAKE_MB = 300
# Safety factor on the computed working set (allocator slack, temporaries).
SLACK = 1.25
MIN_RUNTIME_MIN = 5


def request_mb(n_bytes):
    """Request for a task whose data take n_bytes: Snakemake's processes in the job, the
    task's interpreter and libraries, and the data with slack."""
    return int(math.ceil(SNAKEMAKE_MB + BASE_MB + SLACK * n_bytes / 1e6))


def fixed_mb(working_mb):
    """Request for a task with a fixed working set (MB)."""
    return request_mb(working_mb * 1e6)


def runtime_minutes(seconds):
    """Request for a task expected to take ``seconds``: 1.5 x that, at least MIN_RUNTIME_MIN."""
    return max(MIN_RUNTIME_MIN, int(math.ceil(1.5 * seconds / 60)))


def read_json(path):
    """A small JSON file an earlier task wrote (the mask's description, a shard's index)."""
    with open(path) as handle:
        return json.load(handle)
