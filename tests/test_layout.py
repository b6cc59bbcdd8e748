"""The layout README.md describes: one package per arm, only shared plumbing at the top of
the library, the lesion arm's first level with its two wings (group level, hub controls)
leaning one way, no import circle, tests that mirror the packages, and a Layout table
naming every module and rule file there is."""

import ast
import re

from projects import REPO

LIBRARY = REPO / "workflow" / "scripts" / "shardmap"
SHARED = {"__init__", "atomic", "errors", "task", "config_check", "resources", "devices", "superseded", "sheets"}
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
    """tests/ has a folder per package, and per wing of the lesion arm (tests/lnm/group,
    tests/lnm/hubs)."""
    tests = REPO / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders == PACKAGES | {"workflow"}, folders
    wings = {p.name for p in (tests / "lnm").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert wings == {"group", "hubs"}, wings
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test modules share a name (pytest imports them by name)"


def is_library_module(name):
    """Whether the dotted ``name`` is a module or package of the library."""
    path = LIBRARY.joinpath(*name.split(".")[1:])
    return name.startswith("shardmap.") and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def module_name(path):
    """The dotted name of the library file ``path`` (a package by its __init__)."""
    return ".".join(("shardmap",) + path.relative_to(LIBRARY).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(path):
    """The absolute names of the modules a library file imports (lazy imports included):
    ``from X import Y`` counts as X.Y where Y is a module of X, else as X."""
    package = ".".join(("shardmap",) + path.relative_to(LIBRARY).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if is_library_module(f"{base}.{alias.name}") else base)
    return names


# The lesion arm's two wings beside its first level, and the modules that make them.
WINGS = {"group": {"design", "design_maps", "glm", "permutations", "tfce", "specificity"},
         "hubs": {"degree", "hub_bias", "null_plan", "null_lesions", "null_maps"}}


def wing_of(module):
    """'group', 'hubs' or 'first' for a dotted module name of the lesion arm: its package
    where it lies in a wing's, else the wing its name belongs to (so a wing's module left
    among the first level's still counts as the wing's)."""
    parts = module.split(".")[2:]
    if parts and parts[0] in WINGS:
        return parts[0]
    return next((wing for wing, names in WINGS.items() if parts and parts[-1] in names), "first")


def lesion_arm_modules():
    """{dotted name: path} of every module of the lesion arm."""
    return {module_name(path): path for path in sorted((LIBRARY / "lnm").rglob("*.py"))}


def test_lesion_arm_has_its_three_wings():
    """The group level and the hub controls each in their own package; no module of a
    wing lies among the first level's."""
    for wing, modules in WINGS.items():
        assert modules <= {p.stem for p in (LIBRARY / "lnm" / wing).glob("*.py")}, wing
    misplaced = [name for name in lesion_arm_modules() if wing_of(name) != "first" and name.split(".")[2] not in WINGS]
    assert not misplaced, misplaced


def test_lesion_arm_wings_lean_one_way():
    """The first level imports neither wing; the group level does not import the hub controls."""
    allowed = {"first": {"first"}, "group": {"first", "group"}, "hubs": {"first", "group", "hubs"}}
    wrong = [f"{name} imports {other}" for name, path in lesion_arm_modules().items()
             for other in sorted(imported_modules(path))
             if other.startswith("shardmap.lnm.") and wing_of(other) not in allowed[wing_of(name)]]
    assert not wrong, wrong


def test_no_import_circle_in_the_library():
    """No module of the library imports, directly or through others, a module that imports it."""
    modules = {module_name(path): path for path in LIBRARY.rglob("*.py")}
    graph = {name: {other for other in imported_modules(path) if other in modules and other != name}
             for name, path in modules.items()}
    state, circles = {}, []

    def visit(name, trail):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                circles.append(trail[trail.index(other):] + [other])
            elif other not in state:
                visit(other, trail + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles
