"""Configs that load but would not do what they say are refused at validate and apply (config/entry_checks.py),
and a CRM profile id spelled another way is a problem, never a traceback. A stored version is read by the model
alone, so one applied before these checks still loads (checked last)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from efficy_sync.config import ConfigError, IntegrationConfig, config_from_dict, load_config_text

from tests.unit.test_config import BASE, with_

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("efficy-sync"))


def refused_at(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return [p.path for p in info.value.problems]


TWO_SUBSCRIPTIONS_ONE_PROFILE = """
consent_mappings:
  - {crm_profile: 12, subscription: usercreated.topics.news-ab12, channel: email}
  - {crm_profile: SECOND, subscription: usercreated.topics.offers-cd34, channel: email}
"""


@pytest.mark.parametrize("second", ["12.0", "'012'", "'+12'", "1.2e1"])
def test_one_profile_spelled_two_ways_is_a_problem_not_a_traceback(second: str) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + TWO_SUBSCRIPTIONS_ONE_PROFILE.replace("SECOND", second)
    with pytest.raises(ConfigError) as info:  # was: AssertionError in config_from_dict
        load_config_text(text)
    assert any(p.path.startswith("consent_mappings[1]") for p in info.value.problems)


def test_validate_names_it_with_exit_1_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False) + TWO_SUBSCRIPTIONS_ONE_PROFILE.replace("SECOND", "12.0"))
    run = subprocess.run([CLI, "config", "validate", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and "Traceback" not in run.stderr and "consent_mappings[1]" in run.stdout


@pytest.mark.parametrize(
    "conditions",
    [
        [{"field": "OPENED", "equals": "1"}, {"field": "OPENED", "equals": "0"}],
        [{"field": "ROBINSON", "equals": "1"}, {"field": "ROBINSON", "not_equals": "true"}],
        [{"field": "NOTE", "is_empty": True}, {"field": "NOTE", "not_empty": True}],
        [{"field": "NOTE", "is_empty": True}, {"field": "NOTE", "equals": "x"}],
        [{"field": "LANGUAGE", "in": ["FR", "NL"]}, {"field": "LANGUAGE", "equals": "EN"}],
        [{"field": "LANGUAGE", "in": ["FR"]}, {"field": "LANGUAGE", "not_equals": "FR"}],
        [{"field": "STATUS", "equals": "3"}, {"field": "STATUS", "not_equals": "3.0"}],  # one number (conditions._same)
        [{"field": "STATUS", "in": ["3,00"]}, {"field": "STATUS", "not_equals": "3"}],
    ],
)
def test_conditions_nobody_can_pass_are_refused(conditions: list[dict[str, Any]]) -> None:
    assert refused_at(with_(sync_conditions=conditions)) == ["sync_conditions[1]"]


@pytest.mark.parametrize(
    "conditions",
    [
        [{"field": "OPENED", "equals": "1"}, {"field": "OPENED", "equals": "true"}],  # one yes/no value
        [{"field": "LANGUAGE", "in": ["FR", "NL"]}, {"field": "LANGUAGE", "not_equals": "FR"}],
        [{"field": "NOTE", "not_empty": True}, {"field": "NOTE", "not_equals": "x"}],
        [{"field": "OPENED", "equals": "1"}, {"field": "ROBINSON", "equals": "0"}],  # other fields
        [{"field": "STATUS", "equals": "3"}, {"field": "STATUS", "equals": "3.0"}],  # one number
        [{"field": "STATUS", "equals": "3"}, {"field": "STATUS", "not_equals": "03"}],  # a code, not the number 3
    ],
)
def test_conditions_someone_can_pass_are_taken(conditions: list[dict[str, Any]]) -> None:
    assert isinstance(config_from_dict(with_(sync_conditions=conditions)), IntegrationConfig)


@pytest.mark.parametrize("schedule", ["cron(0/15 * * * ? *)", "cron(30 */2 * * ? *)", "cron(0 3 ? * MON *)"])
def test_a_cron_the_sweeper_would_read_as_daily_is_refused(schedule: str) -> None:
    """schedule_due runs a cron once a day at its minute and hour: every 15 minutes ran daily at 00:00."""
    tags = {"queries": [{"query": 3618, "tag": "vip", "schedule": schedule}]}
    assert refused_at(with_(tags=tags)) == ["tags.queries[0].schedule"]


@pytest.mark.parametrize("schedule", ["cron(0 3 * * ? *)", "cron(15 23 ? * * *)", "rate(15 minutes)"])
def test_daily_crons_and_rates_are_taken(schedule: str) -> None:
    cfg = config_from_dict(with_(tags={"queries": [{"query": 3618, "tag": "vip", "schedule": schedule}]}))
    assert cfg.tags.queries[0].schedule == schedule


@pytest.mark.parametrize(
    "attribute", ["com.apsis1.attributes.EMAIL", "com.apsis1.attributes.Email", "com.apsis1.attributes.CrmId"]
)
def test_the_automatic_attributes_are_refused_in_any_case(attribute: str) -> None:
    assert refused_at(with_(field_mappings=[{"efficy": "EMAIL2", "apsis": attribute}])) == ["field_mappings[0].apsis"]


@pytest.mark.parametrize("tag", ["vip\x7fclub", "vip\x85club", "vip\u2028club", "vip\ufffeclub"])
def test_a_tag_config_show_could_not_give_back_is_refused(tag: str) -> None:
    """JSON printed DEL raw (apply then refused it); YAML read U+0085 back as a space: another tag."""
    text = (
        yaml.safe_dump(BASE, sort_keys=False) + "tags: " + json.dumps({"profiles": [{"crm_profile": 12, "tag": tag}]})
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert [p.path for p in info.value.problems] == ["tags.profiles[0].tag"]


def test_a_version_stored_before_these_checks_still_loads() -> None:
    """The store reads a version with the model alone: an integration applied before a check must keep syncing."""
    stored = with_(sync_conditions=[{"field": "OPENED", "equals": "1"}, {"field": "OPENED", "equals": "0"}])
    assert IntegrationConfig.model_validate(stored).sync_conditions[1].equals == "0"
