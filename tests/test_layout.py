"""The layout README.md describes: one package per arm, only shared plumbing at the top of
the library, tests that mirror the packages, and a Layout table naming every module and
rule file there is."""

import re

from projects import REPO

LIBRARY = REPO / "workflow" / "scripts" / "shardmap"
SHARED = {"__init__", "atomic", "errors", "task", "config_check", "resources", "devices"}
PACKAGES = {"lnm", "cpa", "report"}


def layout_table():
    text = (REPO / "README.md").read_text()
    return text[text.index("## Layout"):]


def test_top_of_the_library_holds_only_shared_plumbing():
    modules = {p.stem for p in LIBRARY.glob("*.py")}
    packages = {p.name for p in LIBRARY.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules == SHARED, modules ^ SHARED
    assert packages == PACKAGES, packages ^ PACKAGES


def test_no_arm_imports_the_other():
    """The lesion arm never imports the perturbation arm and the other way round (the
    report draws both, so it may import either)."""
    for arm, other in (("lnm", "cpa"), ("cpa", "lnm")):
        for path in (LIBRARY / arm).rglob("*.py"):
            text = path.read_text()
            assert not re.search(rf"(from|import) (shardmap|\.+)\.?{other}\b", text), f"{path} imports {other}"


def test_every_module_and_rule_file_is_named_in_the_readme_layout():
    table = layout_table()
    for path in LIBRARY.rglob("*.py"):
        if path.stem != "__init__":
            assert f"`{path.stem}`" in table, f"README's Layout table does not name {path.relative_to(LIBRARY)}"
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        assert path.name in table, f"README's Layout table does not name {path.name}"


def test_tests_mirror_the_packages():
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders == PACKAGES | {"workflow"}, folders
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test modules share a name (pytest imports them by name)"
