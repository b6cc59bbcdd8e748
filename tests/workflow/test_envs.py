"""Conda policy: every rule runs in a named environment, every environment pins every
package exactly, and the pins are the versions CI tests with (requirements.txt).

No conda channel is reachable from the project's machines, so the environments cannot be
built here; these checks are what keeps them honest.
"""

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from projects import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
CHANNELS = ["conda-forge", "bioconda", "nodefaults"]
# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {"pytorch": "torch", "python-isal": "isal"}
EXACT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[0-9]+(\.[0-9]+)*([a-z]+[0-9]+)?"
                   r"(\.post[0-9]+)?)$")


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements():
    """{normalised PyPI name: version} of requirements.txt, which pins with == only."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not re.search(r"[<>=!~*,;\s]", version), f"requirements.txt: '{line}' is not exact"
        pins[normalise(name)] = version
    return pins


def env_pins(path):
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{path.name}: {dep!r} (a pip: section is not allowed; conda packages only)"
        found = EXACT.match(dep)
        assert found, f"{path.name}: '{dep}' is not pinned to one exact version (name==version)"
        pins[found["name"]] = found["version"]
    return env, pins


def load_rules():
    """The workflow's rules (the demo config enables every rule, both arms and the demo)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, Quietness, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=REPO / "Snakefile",
                                workdir=REPO)._workflow
        return list(workflow.rules)


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def test_there_are_environments():
    assert {p.name for p in ENVS} >= {"lnm.yaml", "cpa.yaml"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environment_pins_every_package_exactly(path):
    env, pins = env_pins(path)
    assert env["channels"] == CHANNELS, f"{path.name}: channels must be exactly {CHANNELS}"
    assert "python" in pins


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_pins_are_the_versions_ci_tests_with(path):
    _, pins = env_pins(path)
    tested = requirements()
    for name, version in pins.items():
        if name == "python":
            running = f"{sys.version_info.major}.{sys.version_info.minor}"
            assert version.startswith(running + "."), f"{path.name}: python {version}, tests run on {running}"
            continue
        pypi = normalise(CONDA_TO_PYPI.get(name, name))
        assert pypi in tested, f"{path.name}: {name} is not in requirements.txt, so CI never tests it"
        assert tested[pypi] == version, f"{path.name}: {name}=={version}, CI tests {pypi}=={tested[pypi]}"


def test_python_pin_satisfies_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    requires = SpecifierSet(re.search(r'requires-python\s*=\s*"([^"]+)"', text).group(1))
    for path in ENVS:
        _, pins = env_pins(path)
        assert pins["python"] in requires, f"{path.name}: python {pins['python']} not in {requires}"


def test_library_dependencies_are_in_an_environment():
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S).group(1)
    needed = {normalise(name) for name in re.findall(r'"([^"]+)"', block)}
    provided = {normalise(CONDA_TO_PYPI.get(name, name)) for path in ENVS for name in env_pins(path)[1]}
    assert needed <= provided, needed - provided


def test_every_rule_runs_in_an_existing_environment(rules):
    names = {rule.name for rule in rules}
    assert {"lnm_map", "lnm_demo_data", "cpa_train", "cpa_demo_data", "all"} <= names
    for rule in rules:
        if rule.norun:  # `all` only collects targets
            continue
        assert rule.conda_env, f"rule {rule.name} has no conda: environment"
        path = (Path(rule.snakefile).parent / str(rule.conda_env)).resolve()
        assert path in [p.resolve() for p in ENVS], f"rule {rule.name}: {rule.conda_env} is not one of envs/*.yaml"


def test_every_rule_declares_memory_and_runtime(rules):
    """Declared by the rule itself (config/README.md has the formulas), never left to the
    profile's defaults."""
    for rule in rules:
        if rule.norun:
            continue
        assert "mem_mb" in rule.resources and "runtime" in rule.resources, rule.name
        assert rule.log, f"rule {rule.name} has no log"


PERTURBATION_STACK = {"torch", "scvi-tools", "lightning", "pytorch-lightning", "anndata", "rdkit", "pyro-ppl"}


def test_the_lesion_only_requirements_are_the_ci_pins_without_the_perturbation_stack():
    """requirements-lnm.txt (README: "Lesion mapping only") pins a subset of requirements.txt,
    at the same versions, and none of the perturbation arm's stack."""
    ci = requirements()
    lesion_only = {}
    for line in (REPO / "requirements-lnm.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            lesion_only[normalise(name)] = version
    assert {name: ci.get(name) for name in lesion_only} == lesion_only
    assert not PERTURBATION_STACK & set(lesion_only)
    lnm_pins = env_pins(REPO / "envs" / "lnm.yaml")[1]
    lnm_env = {normalise(CONDA_TO_PYPI.get(n, n)) for n in lnm_pins} - {"python", "torch"}
    assert lnm_env <= set(lesion_only), lnm_env - set(lesion_only)
