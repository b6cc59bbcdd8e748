"""The Snakefile and the rule files: the demo config builds its job graph, `snakemake
--lint` is clean, and snakefmt (the formatter the workflow catalog checks) would change
nothing."""

import subprocess
import sys

from projects import REPO, SNAKEMAKE

RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def test_default_config_dry_run_and_lint():
    """The embedded demo config builds its job graph, and --lint is clean."""
    dry = subprocess.run(SNAKEMAKE + ["-n", "--forceall", "--cores", "2"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "lnm_demo_data" in dry.stdout and "cpa_demo_data" in dry.stdout
    lint = subprocess.run(SNAKEMAKE + ["--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_snakefile_and_rule_files_are_formatted_with_snakefmt():
    """snakefmt --check (pinned in requirements.txt; line length in pyproject.toml)."""
    assert len(RULE_FILES) >= 8
    check = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *map(str, RULE_FILES)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
