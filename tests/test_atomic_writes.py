"""Every file the library writes goes through shardmap.atomic (or, for the model folder,
a temporary folder renamed into place): a reader never sees half a file."""

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "shardmap"
WRITERS = {"save", "savez", "savez_compressed", "write_h5ad", "savefig", "to_csv", "dump", "write_text",
           "write_bytes", "to_filename", "write"}
# Writes that are atomic by other means: into a temporary folder that is renamed whole, or
# into a file handle opened by atomic_open, or onto a file opened for update in place.
ALLOWED_FUNCTIONS = {"save_model_atomically", "_write_npy_header"}


def atomic_blocks(tree):
    """Line ranges of `with` statements that open an atomic_open / atomic_path context."""
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                name = getattr(getattr(call, "func", None), "id", None) or getattr(
                    getattr(call, "func", None), "attr", None)
                if name in ("atomic_open", "atomic_path"):
                    ranges.append((node.lineno, node.end_lineno))
    return ranges


def enclosing_functions(tree):
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans.append((node.lineno, node.end_lineno, node.name))
    return spans


MODULES = {"np", "nib", "torch", "json", "pd", "ad", "h5py", "shutil", "os"}


def atomic_methods(trees):
    """Names of library methods whose body writes through an atomic block (e.g. the
    save() of SufficientStats and LesionBatch)."""
    names = set()
    for tree in trees:
        blocks = atomic_blocks(tree)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for method in cls.body:
                if isinstance(method, ast.FunctionDef) and any(
                        method.lineno <= start <= method.end_lineno for start, _ in blocks):
                    names.add(method.name)
    return names


def test_every_write_in_the_library_is_atomic():
    unguarded = []
    own = atomic_methods([ast.parse(p.read_text()) for p in LIBRARY.rglob("*.py")])
    assert {"save"} <= own
    for path in sorted(LIBRARY.rglob("*.py")):
        tree = ast.parse(path.read_text())
        blocks, functions = atomic_blocks(tree), enclosing_functions(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in WRITERS):
                continue
            line = node.lineno
            if any(start <= line <= end for start, end in blocks):
                continue
            receiver = getattr(node.func.value, "id", None)
            if node.func.attr in own and receiver not in MODULES:
                continue  # our own atomic save()
            names = {name for start, end, name in functions if start <= line <= end}
            if names & ALLOWED_FUNCTIONS:
                continue
            # h5py datasets filled inside an atomic_path block of the caller are writes to
            # a temporary file; json.dumps / str.write on an atomic handle are covered above
            unguarded.append(f"{path.relative_to(LIBRARY)}:{line} .{node.func.attr}()")
    assert not unguarded, "writes outside shardmap.atomic:\n" + "\n".join(unguarded)
