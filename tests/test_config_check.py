"""Config validation names every bad key, with the nearest valid key for a typo."""

from pathlib import Path

import pytest
import yaml

from shardmap.config_check import check_config, config_problems
from shardmap.errors import InputError

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
DEMO = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.yaml").read_text())


def with_change(path, value):
    config = yaml.safe_load(yaml.safe_dump(DEMO))
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    return config


def test_demo_config_is_valid():
    assert config_problems(DEMO, SCHEMA) == []


@pytest.mark.parametrize("path, nearest", [
    ("lnm.lesion_batch_siz", "lnm.lesion_batch_size"),
    ("lnm.connectome.dtyp", "lnm.connectome.dtype"),
    ("cpa.shard_sise", "cpa.shard_size"),
    ("cpa.train.max_epoch", "cpa.train.max_epochs"),
    ("repot", "report"),
])
def test_unknown_key_names_the_nearest_valid_key(path, nearest):
    problems = config_problems(with_change(path, 1), SCHEMA)
    assert len(problems) == 1
    assert f"unknown config key '{path}': did you mean '{nearest}'?" in problems[0]


def test_unknown_key_with_no_near_match_lists_the_valid_keys():
    (problem,) = config_problems(with_change("lnm.zzz", 1), SCHEMA)
    assert "unknown config key 'lnm.zzz': valid keys under 'lnm' are connectome, degree_regression, device" in problem


def test_unknown_key_inside_a_list_item():
    config = with_change("cpa.counterfactuals", [{"perturbation": "drug04", "dosge": "1"}])
    (problem,) = config_problems(config, SCHEMA)
    assert "'cpa.counterfactuals[0].dosge': did you mean 'cpa.counterfactuals[0].dosage'?" in problem


@pytest.mark.parametrize("path, value, fragment", [
    ("lnm.lesion_batch_size", "many", "config key 'lnm.lesion_batch_size' must be of type integer, but it is 'many' (str)"),
    ("cpa.shard_size", 2.5, "config key 'cpa.shard_size' must be of type integer, but it is 2.5 (float)"),
    ("lnm.device", "gpu", "config key 'lnm.device' must be one of auto, cpu, cuda; it is 'gpu'"),
    ("lnm.lesion_batch_size", 0, "config key 'lnm.lesion_batch_size' is 0 (int): 0 is less than the minimum of 1"),
    ("lnm.specificity.alpha", 0, "config key 'lnm.specificity.alpha' is 0 (int): 0 is less than or equal to the minimum"),
    ("lnm.sensitivity_threshold", -7, "config key 'lnm.sensitivity_threshold' is -7 (int): -7 is less than or equal"),
    ("lnm.specificity.cases", [1], "config key 'lnm.specificity.cases[0]' must be of type string, but it is 1 (int). "
                                   "Write it in quotes (\"1\") so that YAML reads it as text."),
])
def test_wrong_type_or_value_names_the_key(path, value, fragment):
    (problem,) = config_problems(with_change(path, value), SCHEMA)
    assert fragment in problem


def test_every_problem_is_listed_at_once():
    config = with_change("lnm.threads", "two")
    config["lnm"]["lesion_batch_siz"] = 3
    with pytest.raises(InputError, match=r"the config \(my.yaml\) has 2 problem\(s\)") as info:
        check_config(config, SCHEMA, source="the config (my.yaml)")
    assert "lnm.threads" in str(info.value) and "lnm.lesion_batch_siz" in str(info.value)
    assert "config/README.md" in str(info.value)


def test_missing_required_key_is_named():
    config = with_change("lnm.connectome", {"mask": "m.nii.gz"})
    (problem,) = config_problems(config, SCHEMA)
    assert problem == "config key 'lnm.connectome.subjects' is required but missing."


def test_an_unquoted_on_key_of_a_counterfactual_is_read_as_on():
    """YAML 1.1 reads the key `on` as True; the config check gives it back."""
    config = yaml.safe_load(yaml.safe_dump(DEMO))
    config["cpa"]["counterfactuals"] = yaml.safe_load("- {perturbation: drug04, dosage: '1', on: lab_controls}")
    assert True in config["cpa"]["counterfactuals"][0]
    assert config_problems(config, SCHEMA) == []
    assert config["cpa"]["counterfactuals"][0]["on"] == "lab_controls"
