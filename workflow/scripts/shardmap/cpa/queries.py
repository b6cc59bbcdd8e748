"""The query data sets of cpa.query: the config's list of entries, or a tab-separated
sheet of them, checked (unique names, the counterfactuals that name them) while the
workflow builds its job graph.

Only the standard library, jsonschema and PyYAML (``shardmap.sheets``): this runs in the
Snakemake process.
"""

from __future__ import annotations

from ..errors import InputError
from ..sheets import read_rows, validate_rows

ENTRY_KEYS = ("name", "adata", "layer", "gene_key", "missing_genes", "covariates")


def read_query_sheet(sheet):
    """The entries of a cpa.query sheet (``cpa_query.schema.yaml``), in row order."""
    header, rows = read_rows(sheet, "cpa.query")
    validate_rows(sheet, "cpa.query", header, rows, "cpa_query.schema.yaml")
    return [row for _, row in rows]


def query_entries(value):
    """{name: entry} of cpa.query (a list of entries or a sheet's path); each entry has
    every key of ENTRY_KEYS (None where not given, missing_genes "refuse")."""
    entries = read_query_sheet(value) if isinstance(value, str) else list(value or [])
    named = {}
    for number, entry in enumerate(entries):
        name = entry["name"]
        if name in named:
            raise InputError(f"cpa.query has two entries named '{name}'; names must be unique (they name the "
                             f"outputs, {{outdir}}/cpa/query/{{name}}/).")
        casefolded = {other.casefold(): other for other in named}
        if name.casefold() in casefolded:
            raise InputError(f"cpa.query: the names '{casefolded[name.casefold()]}' and '{name}' differ only in upper "
                             "and lower case; they name output folders, which would be one on a case-insensitive "
                             "file system. Rename one.")
        full = {key: entry.get(key) for key in ENTRY_KEYS}
        full["missing_genes"] = full["missing_genes"] or "refuse"
        full["covariates"] = dict(full["covariates"] or {})
        named[name] = full
    return named


def check_counterfactual_targets(counterfactuals, queries, has_training_file):
    """InputError for a counterfactual whose ``on`` names no query, or that has no ``on``
    when there is no training file to take control cells from."""
    for number, item in enumerate(counterfactuals or []):
        target = item.get("on")
        if target is not None and target not in queries:
            raise InputError(f"cpa.counterfactuals[{number}] is on '{target}', which is not the name of a "
                             f"cpa.query entry (names: {sorted(queries) or 'none'}).")
        if target is None and not has_training_file:
            raise InputError(f"cpa.counterfactuals[{number}] ('{item['perturbation']}') has no `on`, so it would "
                             "predict the control cells of cpa.adata, which is not set; name a query with "
                             "on: <query name>, or set cpa.adata.")
