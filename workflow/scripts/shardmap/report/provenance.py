"""What a report needs to be reproducible: the config used and the software versions."""

from __future__ import annotations

import csv
import platform
from importlib import metadata
from pathlib import Path

import yaml

from ..atomic import atomic_open

# The packages whose versions decide the results (PyPI names).
PACKAGES = ("snakemake", "numpy", "scipy", "pandas", "nibabel", "nilearn", "torch", "lightning", "scvi-tools",
            "anndata", "h5py", "scikit-learn", "umap-learn", "matplotlib")
CONDA_TO_PYPI = {"pytorch": "torch"}


def installed_version(package):
    """The installed version (from the package metadata, nothing is imported), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def conda_pins(envs):
    """{PyPI name: {env file name: pinned version}} of the conda environment files
    ``envs`` (a list of paths, or a folder of *.yaml)."""
    pins = {}
    paths = sorted(Path(envs).glob("*.yaml")) if isinstance(envs, (str, Path)) else sorted(map(Path, envs))
    for path in paths:
        env = yaml.safe_load(path.read_text()) or {}
        for dep in env.get("dependencies") or []:
            if isinstance(dep, str) and "==" in dep:
                name, version = dep.split("==", 1)
                pins.setdefault(CONDA_TO_PYPI.get(name, name), {})[path.name] = version
    return pins


def write_versions(out_path, envs):
    """TSV: package, the version installed where this task ran, the conda pins of ``envs``."""
    pins = conda_pins(envs)
    with atomic_open(out_path, "w") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["package", "installed_here", "conda_pins"])
        writer.writerow(["python", platform.python_version(),
                         ", ".join(f"{env}: {v}" for env, v in sorted(pins.get("python", {}).items()))])
        for package in PACKAGES:
            pinned = ", ".join(f"{env}: {v}" for env, v in sorted(pins.get(package, {}).items()))
            writer.writerow([package, installed_version(package) or "not installed here", pinned or "-"])
        writer.writerow(["platform", platform.platform(), "-"])


def write_config(config, out_path):
    """The config the run used (after schema defaults), as YAML."""
    with atomic_open(out_path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False, default_flow_style=False)
