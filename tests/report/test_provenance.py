"""The report's provenance table: the installed versions and the pins of envs/*.yaml."""

from importlib import metadata

from projects import REPO
from shardmap.report.provenance import conda_pins, write_versions


def test_versions_table_lists_installed_and_pinned_versions(tmp_path):
    write_versions(tmp_path / "v.tsv", REPO / "envs")
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in (tmp_path / "v.tsv").read_text().splitlines()}
    for package in ("python", "numpy", "nibabel", "nilearn", "torch", "scvi-tools", "anndata", "snakemake"):
        assert package in rows, package
    assert rows["nilearn"][0] == metadata.version("nilearn")  # installed here
    assert "lnm.yaml: " + metadata.version("nilearn") in rows["nilearn"][1]  # and pinned in the env
    assert "report.yaml" in conda_pins(REPO / "envs")["matplotlib"]
