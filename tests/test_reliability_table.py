"""docs/reliability.md's table of bad inputs: at least 30 rows, covering both arms, each
naming an existing test whose file contains the excerpt of the message shown."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\d+) \| (\w+) \| (.+?) \| (job graph|check rule|task) \| `(.+)` "
                 r"\| `(tests/[\w/]+\.py)::(\w+)` \|$")


def table_rows():
    lines = [line for line in (REPO / "docs" / "reliability.md").read_text().splitlines()
             if re.match(r"^\| \d+ \|", line)]
    rows = [ROW.match(line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows) if not row]
    return [row.groups() for row in rows]


def test_table_has_enough_rows_for_both_arms():
    rows = table_rows()
    assert len(rows) >= 30
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    arms = {r[1] for r in rows}
    assert {"LNM", "CPA", "config"} <= arms
    assert sum(r[1] == "LNM" for r in rows) >= 10 and sum(r[1] == "CPA" for r in rows) >= 10


def test_every_row_names_a_test_that_asserts_its_message():
    for number, _, what, _, excerpt, path, name in table_rows():
        source = (REPO / path).read_text()
        functions = {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"row {number} ({what}): {path} has no {name}"
        # an excerpt may appear in the test as a regular expression, with ( ) [ ] escaped
        assert excerpt in source or excerpt in source.replace("\\", ""), (
            f"row {number} ({what}): '{excerpt}' is not asserted in {path}")
