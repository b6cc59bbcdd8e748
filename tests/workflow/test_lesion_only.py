"""A lesion-only install (requirements-lnm.txt: no torch, scvi-tools, Lightning, anndata or
RDKit) runs every task of the lesion arm, the report's figures included: the workflow is
run with those packages made unimportable, and no task even tries to import them (with
`lnm.device: auto` on a node without a GPU, the device is decided without torch)."""

import subprocess

import numpy as np
import pytest

from projects import REPO, SNAKEMAKE, write_project
from synthetic import make_dataset

pytestmark = pytest.mark.workflow

BLOCKER = '''
import importlib.abc
import importlib.machinery
import os
import sys

BLOCKED = {"torch", "scvi", "lightning", "pytorch_lightning", "anndata", "rdkit", "pyro"}


class PerturbationStackBlocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """As if the perturbation stack were not installed: importing it fails, and every
    import is logged. Asking whether it is there (importlib.util.find_spec, as polars does
    to see whether torch is installed) is not an import: it finds a spec, which fails only
    when loaded."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        with open(os.environ["BLOCKED_IMPORTS_LOG"], "a") as log:
            log.write(f"{spec.name} {sys.argv[-1]}\\n")
        raise ModuleNotFoundError(f"{spec.name} is not installed (lesion-only install)")

    def exec_module(self, module):
        raise AssertionError("create_module always fails")


sys.meta_path.insert(0, PerturbationStackBlocker())
'''


def test_the_lesion_arm_runs_without_the_perturbation_stack(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(17))
    write_project(tmp_path, dataset, report=True, device="auto", degree_regression=True,
                  specificity={"enabled": True, "cases": ["g1"], "controls": ["g2"], "n_permutations": 20,
                               "permutation_shard_size": 20, "alpha": 0.4})
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "BLOCKED_IMPORTS_LOG": str(log)}
    probe = subprocess.run([*SNAKEMAKE[:1], "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "lesion-only install" in probe.stderr  # the blocker is in place
    log.unlink()
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
                       "--configfile", "my.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "out" / "figures" / "lnm" / "sensitivity_all.png").exists()
    assert (tmp_path / "out" / "lnm" / "specificity" / "tstat.nii.gz").exists()
    assert not log.exists(), log.read_text()
