"""The Snakefile and the rule files: the demo config builds its job graph and `snakemake
--lint` is clean."""

import subprocess

from projects import REPO, SNAKEMAKE


def test_default_config_dry_run_and_lint():
    """The embedded demo config builds its job graph, and --lint is clean."""
    dry = subprocess.run(SNAKEMAKE + ["-n", "--forceall", "--cores", "2"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "lnm_demo_data" in dry.stdout and "cpa_demo_data" in dry.stdout
    lint = subprocess.run(SNAKEMAKE + ["--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr

