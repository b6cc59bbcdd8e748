import numpy as np
import pytest

from synthetic import make_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("lnm-data"), np.random.default_rng(1234))
