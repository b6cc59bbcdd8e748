import os

import numpy as np
import pytest

from synthetic import make_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("lnm-data"), np.random.default_rng(1234))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM (tests/slurm_cluster.py), installed with apt-get when
    missing; the three daemons it starts are stopped by PID at the end, whatever happens."""
    import signal

    import slurm_cluster as cluster_module

    try:
        cluster_module.install()
    except cluster_module.Unavailable as err:
        # CI sets SHARDMAP_REQUIRE_SLURM=1: there a cluster path that cannot be tested fails.
        if os.environ.get("SHARDMAP_REQUIRE_SLURM") == "1":
            pytest.fail(f"SHARDMAP_REQUIRE_SLURM=1 but no SLURM for the slurm tests: {err}")
        pytest.skip(f"no SLURM for the slurm tests: {err}")

    def interrupt(signum, frame):  # a SIGTERM (e.g. a CI time-out) still runs the finalizer
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    cluster = cluster_module.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)
