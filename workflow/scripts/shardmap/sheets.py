"""Tab-separated sheets, as spreadsheet programs export them: read, checked against a
JSON Schema of their columns, with messages that name the sheet, line and column.

Only the standard library, jsonschema and PyYAML: sheets are read inside the Snakemake
process (to build the job graph) as well as in tests. The lesion arm's sheets
(``lnm.sheets``) and the perturbation arm's query sheet use it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import InputError

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
# What one row of a sheet of each kind describes, for the message about a sheet without rows.
ROW_NAMES = {"lesion": "lesion", "cpa.query": "query data set"}


def load_schema(name):
    import yaml

    with open(SCHEMA_DIR / name) as handle:
        return yaml.safe_load(handle)


def read_rows(sheet, kind):
    """Rows of a tab-separated sheet as (line number, dict); blank and '#' lines skipped."""
    sheet = Path(sheet)
    if not sheet.is_file():
        raise InputError(
            f"{kind} sheet '{sheet}' does not exist (resolved against the working directory "
            f"'{os.getcwd()}'); fix the path in the config."
        )
    try:
        with open(sheet, newline="", encoding="utf-8-sig") as handle:
            lines = [(n, line) for n, line in enumerate(handle, start=1)
                     if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{kind} sheet '{sheet}' cannot be read ({err}); "
                         "it must be a UTF-8 tab-separated text file.") from err
    if not lines:
        raise InputError(f"{kind} sheet '{sheet}' is empty; it needs a header line and at least one row.")
    reader = csv.reader((line for _, line in lines), delimiter="\t")
    header = [name.strip() for name in next(reader)]
    if len(header) == 1 and ("," in header[0] or " " in header[0].strip()):
        raise InputError(f"{kind} sheet '{sheet}' has a single column '{header[0]}'; "
                         "columns must be separated by tabs, not commas or spaces.")
    # Spreadsheet programs export empty columns at the ends of lines: unnamed columns at the
    # end of the header are dropped as long as no row has a value in them.
    named = len(header)
    while named and header[named - 1] == "":
        named -= 1
    if "" in header[:named]:
        raise InputError(f"{kind} sheet '{sheet}', line {lines[0][0]}: column {header.index('') + 1} has no "
                         "name (two tabs in a row?); name it or delete it.")
    header = header[:named]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{kind} sheet '{sheet}', line {lines[0][0]}: column(s) {repeated} appear more than "
                         "once in the header; keep one of each.")
    rows = []
    for (number, _), values in zip(lines[1:], reader):
        extra = [(column, value) for column, value in enumerate(values[named:], start=named + 1) if value.strip()]
        if extra:
            column, value = extra[0]
            raise InputError(f"{kind} sheet '{sheet}', line {number}: value '{value.strip()}' in column {column}, "
                             f"but line {lines[0][0]} (the header) names only {named} column(s); name the "
                             "column in the header or delete the value (and check the tabs).")
        if len(values) < named:
            raise InputError(f"{kind} sheet '{sheet}', line {number}: {len(values)} fields but the "
                             f"header has {named}; separate columns with single tabs.")
        row = {name: value.strip() for name, value in zip(header, values)}
        if row.get("path", "").startswith("~"):
            row["path"] = os.path.expanduser(row["path"])  # as a shell would: ~ is the home folder
        rows.append((number, {k: v for k, v in row.items() if v != ""}))
    if not rows:
        raise InputError(f"{kind} sheet '{sheet}' has a header but no rows; add one row per "
                         f"{ROW_NAMES.get(kind, 'run')}.")
    return header, rows


def misspelt_columns(header, known):
    """(column, known name) for each column of ``header`` that is not a known name but
    looks like one that the header lacks (``lesoin_id`` for ``lesion_id``)."""
    import difflib

    absent = [name for name in known if name not in header]
    found = []
    for name in header:
        if name in known:
            continue
        close = difflib.get_close_matches(name.lower(), absent, n=1, cutoff=0.75)
        if close:
            found.append((name, close[0]))
    return found


def validate_rows(sheet, kind, header, rows, schema_name):
    import jsonschema

    schema = load_schema(schema_name)
    known = set(schema["properties"])
    misspelt = misspelt_columns(header, sorted(known))
    if misspelt:
        named = ", ".join(f"'{name}' (did you mean '{close}'?)" for name, close in misspelt)
        raise InputError(f"{kind} sheet '{sheet}': column(s) {named} look like misspellings of "
                         f"{kind} sheet columns; rename them (columns: {sorted(known)}).")
    unknown = [name for name in header if name not in known]
    if unknown and not schema.get("additionalProperties", False):
        raise InputError(f"{kind} sheet '{sheet}' has unknown column(s) {unknown}; "
                         f"allowed columns are {sorted(known)}.")
    missing = [name for name in schema["required"] if name not in header]
    if missing:
        raise InputError(f"{kind} sheet '{sheet}' lacks the required column(s) {missing}; "
                         f"the header must name {schema['required']} (tab-separated), and it names {header}.")
    validator = jsonschema.Draft202012Validator(schema)
    for number, row in rows:
        for error in validator.iter_errors({k: v for k, v in row.items() if k in known}):
            column = error.path[0] if error.path else None
            if column is None:  # a required value is empty
                column = next((c for c in schema["required"] if c not in row), "?")
                raise InputError(f"{kind} sheet '{sheet}', line {number}: column '{column}' is empty; "
                                 f"it must hold {schema['properties'][column]['description'].strip()}.")
            hint = " ".join(schema["properties"][column]["description"].split())
            raise InputError(f"{kind} sheet '{sheet}', line {number}: {column} {row[column]!r} is not "
                             f"valid; {column}: {hint}.")
