"""Check a workflow config against its JSON Schema and say, per key, what to fix.

Snakemake's own ``validate`` stops at the first error and prints the schema fragment;
a user with a typo in a key wants the key's full name and the nearest valid one. This
module lists every problem at once in those terms. It needs only the standard library
and ``jsonschema`` (which Snakemake itself depends on), because it runs in the
Snakemake process while the job graph is built.
"""

from __future__ import annotations

import difflib

import jsonschema

from .errors import InputError

README = "config/README.md"


def key_path(parts):
    """'lnm.connectome.dtype' or 'cpa.counterfactuals[0].dosage' from a jsonschema path."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _joined(parent, key):
    return f"{parent}.{key}" if parent else key


def _unknown_key_messages(error):
    parent = key_path(error.absolute_path)
    valid = sorted(error.schema.get("properties", {}))
    unknown = sorted(set(error.instance) - set(valid))
    where = f"under '{parent}'" if parent else "at the top level"
    messages = []
    for key in unknown:
        nearest = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f"did you mean '{_joined(parent, nearest[0])}'? " if nearest else ""
        messages.append(f"unknown config key '{_joined(parent, key)}': {hint}"
                        f"valid keys {where} are {', '.join(valid)}.")
    return messages


def _describe(value):
    return f"{value!r} ({type(value).__name__})"


def error_messages(error):
    """One or more lines, in the config's terms, for one jsonschema error."""
    if error.validator == "additionalProperties":
        return _unknown_key_messages(error)
    key = key_path(error.absolute_path) or "(the whole config)"
    if error.validator == "type":
        wanted = error.validator_value
        text = " or ".join(wanted) if isinstance(wanted, list) else wanted
        message = f"config key '{key}' must be of type {text}, but it is {_describe(error.instance)}."
        if "string" in (wanted if isinstance(wanted, list) else [wanted]) and isinstance(error.instance, (int, float)):
            # YAML reads an unquoted 1 or 2.5 as a number: a group code or a dose string must be quoted.
            message += f" Write it in quotes (\"{error.instance}\") so that YAML reads it as text."
        return [message]
    if error.validator == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return [f"config key '{key}' must be one of {choices}; it is {error.instance!r}."]
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [f"config key '{_joined(key_path(error.absolute_path), k)}' is required but missing."
                for k in missing]
    return [f"config key '{key}' is {_describe(error.instance)}: {error.message}."]


def config_problems(config, schema):
    """Every problem of ``config`` against ``schema``, as sorted messages (empty: valid); the
    keys YAML read as booleans are restored first (``restore_on_keys``)."""
    restore_on_keys(config)
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    messages = []
    for error in validator.iter_errors(config if config is not None else {}):
        messages.extend(error_messages(error))
    return sorted(set(messages))


def check_config(config, schema, source="the config"):
    """Raise InputError listing every problem of ``config``; return nothing when it is valid."""
    problems = config_problems(config, schema)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise InputError(f"{source} has {len(problems)} problem(s):\n{lines}\n"
                         f"Every key, its type and its default are documented in {README}.")


def check_config_against(config, schema_path, config_files=()):
    """check_config with the schema read from ``schema_path`` (YAML or JSON); the message
    names the config files the values came from."""
    import yaml

    with open(schema_path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    names = ", ".join(str(f) for f in config_files) or "config/config.yaml"
    check_config(config, schema, source=f"the config ({names})")


def restore_on_keys(config):
    """YAML 1.1 (PyYAML, Snakemake's reader) reads the key ``on`` as the boolean True: give
    the entries of cpa.counterfactuals their ``on`` back, so that ``on: my_query`` works
    unquoted."""
    for item in ((config.get("cpa") or {}).get("counterfactuals") or []):
        if isinstance(item, dict) and True in item and "on" not in item:
            item["on"] = item.pop(True)
