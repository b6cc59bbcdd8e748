"""Sample sheets: the lesion sheet and the connectome subject sheet (read by ``shardmap.sheets``).

This module uses only the standard library, jsonschema and PyYAML, because it runs
inside the Snakemake process (to build the job graph) as well as in tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import InputError
from ..sheets import read_rows as _read_rows
from ..sheets import validate_rows as _validate_rows


@dataclass(frozen=True)
class Lesion:
    lesion_id: str
    path: str
    group: str | None = None
    # The sheet's other columns (covariates, clinical notes) as (name, value) pairs; a
    # value left empty in the sheet is absent.
    columns: tuple[tuple[str, str], ...] = ()

    def column(self, name):
        """The value of the sheet's column ``name`` for this lesion, or None where empty."""
        return dict(self.columns).get(name)


@dataclass(frozen=True)
class LesionMap:
    """A row of the lesion map sheet (lnm.specificity.maps): a network map made elsewhere."""

    lesion_id: str
    map_path: str
    group: str
    path: str | None = None  # the lesion mask, for the volume and centrality covariates
    columns: tuple[tuple[str, str], ...] = ()
    t_map_path: str | None = None  # the lesion's T map for the sensitivity map (default: map)

    def column(self, name):
        """The value of the sheet's column ``name`` for this lesion, or None where empty."""
        return dict(self.columns).get(name)


@dataclass(frozen=True)
class Subject:
    """A connectome subject: its id and the files of its runs. ``position`` is the
    subject's row in a file that stores several subjects (lacuna's HDF5), else None."""

    subject_id: str
    runs: tuple[str, ...] = field(default_factory=tuple)
    position: int | None = None

    def as_params(self):
        """The subject as (subject_id, runs[, position]), the form a Snakemake rule passes in
        ``params`` (NIfTI subjects keep the (id, runs) form of earlier versions, so that an
        existing outdir's preparations are not rerun for a new form of the same values)."""
        return (self.subject_id, list(self.runs)) + ((self.position,) if self.position is not None else ())


def _check_file(sheet, number, what, path, generated):
    if path in generated or os.path.normpath(path) in generated:
        return
    if not os.path.exists(path):
        raise InputError(f"sheet '{sheet}', line {number}: {what} file '{path}' does not exist "
                         f"(relative paths are resolved against '{os.getcwd()}'); fix the path.")
    if os.path.isdir(path):
        raise InputError(f"sheet '{sheet}', line {number}: {what} file '{path}' is a directory, not a "
                         "file; give the path of the NIfTI file (.nii or .nii.gz) inside it.")
    if not os.access(path, os.R_OK):
        raise InputError(f"sheet '{sheet}', line {number}: {what} file '{path}' is not a readable "
                         "file; check its permissions.")


STANDARD_LESION_COLUMNS = ("lesion_id", "path", "group")


def _rows_with_unique(rows, column, repeated):
    """(line number, value of ``column``, row) of each row; a value on two lines raises
    ``repeated(value, first line, second line)``, an InputError."""
    seen = {}
    for number, row in rows:
        value = row[column]
        if value in seen:
            raise repeated(value, seen[value], number)
        seen[value] = number
        yield number, value, row


def _rows_by_unique_lesion_id(sheet, kind, rows):
    """(line number, lesion_id, row) of each row; a lesion_id on two lines is an error."""
    return _rows_with_unique(rows, "lesion_id", lambda lesion_id, first, again: InputError(
        f"{kind} sheet '{sheet}': lesion_id '{lesion_id}' appears on lines {first} and {again}; lesion ids "
        "must be unique."))


def read_lesions(sheet, check_files=True, generated=frozenset()):
    """Read and validate the lesion sheet.

    Columns other than lesion_id, path and group (covariates, clinical notes) are kept in
    ``Lesion.columns``; a column that looks like a misspelt standard one is an error.

    Parameters
    ----------
    sheet : path of the tab-separated sheet (columns lesion_id, path [, group], any others).
    check_files : whether every path must exist now.
    generated : paths that a rule of the workflow creates (they need not exist yet).

    Returns
    -------
    list of Lesion, in sheet order.
    """
    header, rows = _read_rows(sheet, "lesion")
    _validate_rows(sheet, "lesion", header, rows, "lesions.schema.yaml")
    lesions = []
    for number, lesion_id, row in _rows_by_unique_lesion_id(sheet, "lesion", rows):
        if check_files:
            _check_file(sheet, number, f"lesion '{lesion_id}'", row["path"], generated)
        other = tuple((name, value) for name, value in row.items() if name not in STANDARD_LESION_COLUMNS)
        lesions.append(Lesion(lesion_id, row["path"], row.get("group"), other))
    if "group" in header:
        missing = [les.lesion_id for les in lesions if les.group is None]
        if missing:
            raise InputError(f"lesion sheet '{sheet}' has a group column but no group for "
                             f"{missing[:5]}; give every lesion a group or drop the column.")
    return lesions


def read_lesion_maps(sheet, check_files=True):
    """Read and validate the lesion map sheet (columns lesion_id, map, group [, path, t_map],
    any others, which are kept in ``LesionMap.columns``).

    Returns
    -------
    list of LesionMap, in sheet order.
    """
    header, rows = _read_rows(sheet, "lesion map")
    _validate_rows(sheet, "lesion map", header, rows, "lesion_maps.schema.yaml")
    maps = []
    for number, lesion_id, row in _rows_by_unique_lesion_id(sheet, "lesion map", rows):
        for column in ("map", "t_map"):
            if row.get(column, "").startswith("~"):
                row[column] = os.path.expanduser(row[column])
        if check_files:
            _check_file(sheet, number, f"map of lesion '{lesion_id}'", row["map"], frozenset())
            if "t_map" in row:
                _check_file(sheet, number, f"T map of lesion '{lesion_id}'", row["t_map"], frozenset())
            if "path" in row:
                _check_file(sheet, number, f"lesion '{lesion_id}'", row["path"], frozenset())
        other = tuple((name, value) for name, value in row.items() if name not in LESION_MAP_COLUMNS)
        maps.append(LesionMap(lesion_id, row["map"], row["group"], row.get("path"), other, row.get("t_map")))
    return maps


LESION_MAP_COLUMNS = ("lesion_id", "map", "group", "path", "t_map")


def read_subjects(sheet, check_files=True, generated=frozenset()):
    """Read and validate the connectome sheet; rows sharing a subject_id are its runs.

    Returns
    -------
    list of Subject in order of first appearance, each with its runs in sheet order.
    """
    header, rows = _read_rows(sheet, "subject")
    _validate_rows(sheet, "subject", header, rows, "subjects.schema.yaml")
    runs = {}

    def repeated(path, first, again):
        return InputError(f"subject sheet '{sheet}': run '{path}' is listed on lines {first} and {again}; list "
                          "every run once.")

    for number, path, row in _rows_with_unique(rows, "path", repeated):
        if check_files:
            _check_file(sheet, number, f"run of subject '{row['subject_id']}'", path, generated)
        runs.setdefault(row["subject_id"], []).append(path)
    if len(runs) < 2:
        raise InputError(f"subject sheet '{sheet}' lists {len(runs)} subject; the T map needs "
                         "at least 2 connectome subjects.")
    return [Subject(subject_id, tuple(paths)) for subject_id, paths in runs.items()]


def as_subjects(subjects):
    """Subject of each item, given as a Subject or as an (id, runs[, position]) list (the
    form a Snakemake rule passes in ``params``, Subject.as_params)."""
    return [s if isinstance(s, Subject) else Subject(s[0], tuple(s[1]), *s[2:3]) for s in subjects]


def read_subject_selection(sheet):
    """The subject ids of a subset sheet (lnm.connectome.subjects with a prepared
    connectome): a ``subject_id`` column, in sheet order; other columns (age, sex) are
    allowed and ignored.

    Returns
    -------
    list of str.
    """
    header, rows = _read_rows(sheet, "subject subset")
    _validate_rows(sheet, "subject subset", header, rows, "subject_subset.schema.yaml")
    return [subject_id for _, subject_id, _ in _rows_with_unique(
        rows, "subject_id", lambda subject_id, first, again: InputError(
            f"subject subset sheet '{sheet}': subject_id '{subject_id}' appears on lines {first} and {again}; "
            "list every subject once."))]


def chunks(items, size):
    """Consecutive chunks of ``items`` of at most ``size`` elements (the last may be shorter)."""
    if size < 1:
        raise InputError(f"a batch or shard size must be >= 1, got {size}.")
    return [list(items[start:start + size]) for start in range(0, len(items), size)]
