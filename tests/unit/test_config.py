"""The integration config: shape, every problem reported with its path, round trips, references, changes."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from efficy_sync.config import (
    ConfigError,
    IntegrationConfig,
    check_references,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    diff_configs,
    json_schema,
    load_config_file,
    load_config_text,
    references,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.properties import examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE: dict = {
    "integration_id": "acme-eu",
    "efficy": {
        "base_url": "https://acme.efficy.cloud/crm",
        "api_key_secret": "efficy-sync/acme-eu/efficy",
        "webhook_secret_secret": "efficy-sync/acme-eu/webhook",
    },
    "apsis": {
        "base_url": "https://api.apsis.one",
        "section": "com.apsis1.sections.default",
        "credentials_secret": "efficy-sync/acme-eu/apsis",
        "optout_token_secret": "efficy-sync/acme-eu/apsis-optout",
    },
}


def with_(**changes) -> dict:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return [str(p) for p in info.value.problems]


def paths_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return [p.path for p in info.value.problems]


# --- examples and defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["acme.yaml", "active-not-robinson.yaml", "demo.yaml"])
def test_examples_load_and_round_trip(name):
    cfg = load_config_file(EXAMPLES / name)
    assert load_config_text(config_to_yaml(cfg)) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_acme_example_is_the_design_example_with_defaults():
    cfg = load_config_file(EXAMPLES / "acme.yaml")
    assert cfg.integration_id == "acme-eu"
    assert [(c.field, c.operator, c.expected) for c in cfg.sync_conditions] == [
        ("OPENED", "equals", "1"),
        ("ROBINSON", "equals", "0"),
    ]
    assert cfg.consent_mappings[0].crm_profile == 12
    assert cfg.tags.queries[0].query == 3618
    assert cfg.efficy.auth.mode == "hmac"
    assert cfg.efficy.auth.signature_header == "X-Efficy-Signature"
    assert cfg.efficy.auth.tolerance_seconds == 300
    assert cfg.efficy.profile_detail == "Prof"
    assert cfg.apsis.optout_token_header == "X-Apsis-Webhook-Token"
    assert cfg.on_condition_lost == "leave"
    assert cfg.on_delete == "ignore"
    assert (cfg.full_sync.max_concurrency, cfg.full_sync.page_size, cfg.full_sync.write_mode) == (5, 500, "diff")


def test_active_not_robinson_example():
    cfg = load_config_file(EXAMPLES / "active-not-robinson.yaml")
    assert [(c.field, c.operator, c.expected) for c in cfg.sync_conditions] == [
        ("OPENED", "equals", "1"),
        ("ROBINSON", "not_equals", "1"),
    ]


def test_demo_example_matches_the_local_stack_contract():
    cfg = load_config_file(EXAMPLES / "demo.yaml")
    assert cfg.integration_id == "demo"
    assert cfg.efficy.api_key_secret == "efficy-sync/demo/efficy"
    assert cfg.efficy.webhook_secret_secret == "efficy-sync/demo/webhook"
    assert cfg.apsis.credentials_secret == "efficy-sync/demo/apsis"
    assert cfg.apsis.optout_token_secret == "efficy-sync/demo/apsis-optout"
    assert {(m.crm_profile, m.subscription, m.channel) for m in cfg.consent_mappings} == {
        (12, "usercreated.topics.newsletter-ab12", "email"),
        (13, "usercreated.topics.sms-offers-cd34", "sms"),
        (14, "usercreated.topics.events-ef56", "email"),
    }
    assert {(m.efficy, m.apsis, m.type) for m in cfg.field_mappings} == {
        ("FIRSTNAME", "com.apsis1.attributes.firstname", "string"),
        ("NAME", "com.apsis1.attributes.lastname", "string"),
        ("MOBILE", "com.apsis1.attributes.mobile", "phone"),
        ("LANGUAGE", "usercreated.attributes.language", "string"),
    }
    assert {(t.crm_profile, t.tag) for t in cfg.tags.profiles} == {(12, "newsletter-readers"), (13, "sms-club")}
    assert [(q.query, q.tag) for q in cfg.tags.queries] == [(3618, "vip")]


def test_minimal_config_gets_defaults():
    cfg = config_from_dict(BASE)
    assert cfg.apsis.keyspace == "com.apsis1.keyspaces.crm-id"
    assert cfg.efficy.page_size == 500
    assert cfg.sync_conditions == [] and cfg.tags.profiles == []


# --- a broken file: every problem, with its path --------------------------------------------------------------

BROKEN = """\
integration_id: Acme EU
efficy:
  base_url: acme.efficy.cloud
  api_key_secret: efficy-sync/acme/efficy
  apikey: x
  auth: {mode: basic}
apsis:
  base_url: "https://api.apsis.one"
  section: com.apsis1.sections.default
  credentials_secret: efficy-sync/acme/apsis
  optout_token_secret: efficy-sync/acme/apsis-optout
sync_conditions:
  - {field: OPENED, equals: "1", in: ["1"]}
  - {field: ROBINSON, equal: "0"}
  - {field: X, is_empty: false}
field_mappings:
  - {efficy: EMAIL1, apsis: com.apsis1.attributes.email}
  - {efficy: AGE, apsis: usercreated.attributes.age, type: integer}
consent_mappings:
  - {crm_profile: 12, subscription: usercreated.topics.a, channel: email}
  - {crm_profile: 12, subscription: usercreated.topics.b, channel: email}
  - {crm_profile: 13, subscription: usercreated.topics.c, channel: fax}
  - {crm_profile: abc, subscription: usercreated.topics.d, channel: email}
tags:
  queries: [{query: 3618, tag: vip, schedule: daily}]
on_condition_lost: forget
full_sync: {max_concurrency: 0, write_mode: fast}
"""


def test_broken_file_reports_every_problem_with_path_and_line():
    with pytest.raises(ConfigError) as info:
        load_config_text(BROKEN)
    by_path = {p.path: p for p in info.value.problems}
    assert set(by_path) == {
        "integration_id",
        "efficy.base_url",
        "efficy.webhook_secret_secret",
        "efficy.apikey",
        "efficy.auth.mode",
        "sync_conditions[0]",
        "sync_conditions[1]",
        "sync_conditions[2].is_empty",
        "field_mappings[0].apsis",
        "field_mappings[1].type",
        "consent_mappings[1].subscription",
        "consent_mappings[2].channel",
        "consent_mappings[3].crm_profile",
        "tags.queries[0].schedule",
        "on_condition_lost",
        "full_sync.max_concurrency",
        "full_sync.write_mode",
    }
    channel = by_path["consent_mappings[2].channel"]
    assert str(channel) == "consent_mappings[2].channel: found 'fax'; allowed: 'email', 'sms' (line 22)"
    assert (channel.found, channel.allowed, channel.line) == ("'fax'", "'email', 'sms'", 22)
    assert by_path["efficy.webhook_secret_secret"].message.startswith("missing")
    assert "did you mean 'api_key_secret'" in by_path["efficy.apikey"].message
    assert "did you mean 'equals'" in by_path["sync_conditions[1]"].message
    assert "exactly one of equals, not_equals, in, is_empty, not_empty" in by_path["sync_conditions[0]"].message
    assert "mapped to them automatically" in by_path["field_mappings[0].apsis"].message
    assert "found 'forget'; allowed: 'leave', 'untag', 'delete'" in str(by_path["on_condition_lost"])
    assert "a number >= 1" in str(by_path["full_sync.max_concurrency"])
    assert "rate(1 day)" in str(by_path["tags.queries[0].schedule"])
    assert by_path["integration_id"].line == 1
    lines = [p.line or 0 for p in info.value.problems]
    assert lines == sorted(lines)
    assert str(info.value).startswith("17 problems in the integration config:")


def test_yaml_syntax_error_has_a_line_number():
    with pytest.raises(ConfigError) as info:
        load_config_text("integration_id: acme\nefficy: {base_url: x\napsis: [\n")
    [problem] = info.value.problems
    assert problem.path == "(file)"
    assert "not valid YAML" in problem.message
    assert problem.line is not None and problem.line >= 2


def test_a_file_nested_thousands_deep_is_a_problem_not_a_traceback():
    with pytest.raises(ConfigError) as info:
        load_config_text("integration_id: " + "[" * 5000 + "]" * 5000 + "\n")
    [problem] = info.value.problems
    assert problem.path == "(file)" and "nested too deeply" in problem.message


def test_duplicate_yaml_keys_are_reported_not_silently_dropped():
    text = yaml.safe_dump(BASE, sort_keys=False) + "integration_id: other\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    [problem] = info.value.problems
    assert problem.path == "integration_id"
    assert "duplicate key; first written on line 1" in problem.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text"])
def test_a_file_that_is_not_a_mapping(text):
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.problems[0].path == "(root)"


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")


# --- fields -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["Acme", "acme_eu", "-acme", "acme-", "", "a" * 65])
def test_integration_id_must_be_a_slug(bad):
    assert paths_of(with_(integration_id=bad)) == ["integration_id"]


@pytest.mark.parametrize("good", ["a", "acme-eu", "demo", "x1-2"])
def test_good_slugs(good):
    assert config_from_dict(with_(integration_id=good)).integration_id == good


def test_base_urls_and_secret_names_are_checked():
    data = with_()
    data["efficy"]["base_url"] = "ftp://acme"
    data["apsis"]["credentials_secret"] = "has spaces"
    assert paths_of(data) == ["efficy.base_url", "apsis.credentials_secret"]


def test_local_placeholder_url_is_accepted():
    data = with_()
    data["efficy"]["base_url"] = "http://127.0.0.1:0/crm"
    assert config_from_dict(data).efficy.base_url == "http://127.0.0.1:0/crm"


def test_webhook_auth_settings():
    data = with_()
    data["efficy"]["auth"] = {"mode": "header", "secret_header": "X-Secret", "tolerance_seconds": 60}
    cfg = config_from_dict(data)
    assert (cfg.efficy.auth.mode, cfg.efficy.auth.secret_header, cfg.efficy.auth.tolerance_seconds) == (
        "header",
        "X-Secret",
        60,
    )
    data["efficy"]["auth"] = {"signature_header": "X Sig"}
    assert paths_of(data) == ["efficy.auth.signature_header"]


def test_page_size_bounds():
    data = with_()
    data["efficy"]["page_size"] = 501
    assert "a number <= 500" in problems_of(data)[0]


# --- conditions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "operator", "expected"),
    [
        ({"field": "OPENED", "equals": "1"}, "equals", "1"),
        ({"field": "opened", "equals": 1}, "equals", "1"),  # field upper-cased, number as Efficy's text
        ({"field": "OPENED", "equals": True}, "equals", "1"),
        ({"field": "ROBINSON", "not_equals": "1"}, "not_equals", "1"),
        ({"field": "LANGUAGE", "in": ["FR", "NL"]}, "in", ["FR", "NL"]),
        ({"field": "EMAIL1", "is_empty": True}, "is_empty", None),
        ({"field": "EMAIL1", "not_empty": True}, "not_empty", None),
    ],
)
def test_condition_operators(condition, operator, expected):
    cfg = config_from_dict(with_(sync_conditions=[condition]))
    [c] = cfg.sync_conditions
    assert c.field == condition["field"].upper()
    assert (c.operator, c.expected) == (operator, expected)
    assert load_config_text(config_to_yaml(cfg)) == cfg


@pytest.mark.parametrize(
    ("condition", "path", "fragment"),
    [
        ({"field": "A"}, "sync_conditions[0]", "found no operator"),
        ({"field": "A", "equals": "1", "not_equals": "2"}, "sync_conditions[0]", "operators equals, not_equals"),
        ({"field": "A", "equals": None}, "sync_conditions[0].equals", "found null"),
        ({"field": "A", "equals": ["1"]}, "sync_conditions[0].equals", "a text or number value"),
        ({"field": "A", "in": []}, "sync_conditions[0].in", "non-empty list"),
        ({"field": "A", "in": "x"}, "sync_conditions[0].in", "non-empty list"),
        ({"field": "A", "not_empty": False}, "sync_conditions[0].not_empty", "found false; allowed: true"),
        ({"field": "bad field", "equals": "1"}, "sync_conditions[0].field", "an Efficy field name"),
        ({"equals": "1"}, "sync_conditions[0].field", "missing"),
    ],
)
def test_bad_conditions(condition, path, fragment):
    [problem] = problems_of(with_(sync_conditions=[condition]))
    assert problem.startswith(f"{path}: ")
    assert fragment in problem


def test_condition_description():
    cfg = config_from_dict(with_(sync_conditions=[{"field": "L", "in": ["FR"]}, {"field": "E", "is_empty": True}]))
    assert [c.describe() for c in cfg.sync_conditions] == ["L in ['FR']", "E is_empty"]


# --- field mappings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reserved", ["com.apsis1.attributes.email", "com.apsis1.attributes.crmid"])
def test_email_and_id_attributes_are_automatic(reserved):
    [problem] = problems_of(with_(field_mappings=[{"efficy": "EMAIL2", "apsis": reserved}]))
    assert problem.startswith("field_mappings[0].apsis: found")
    assert "EMAIL1 and K_CONTACT are mapped to them automatically" in problem


def test_two_mappings_to_one_attribute_conflict():
    maps = [
        {"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"},
        {"efficy": "NICKNAME", "apsis": "com.apsis1.attributes.firstname"},
    ]
    [problem] = problems_of(with_(field_mappings=maps))
    assert problem.startswith("field_mappings[1].apsis:")
    assert "field_mappings[0] already does" in problem


def test_one_field_may_feed_two_attributes():
    maps = [
        {"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"},
        {"efficy": "FIRSTNAME", "apsis": "usercreated.attributes.nick"},
    ]
    assert len(config_from_dict(with_(field_mappings=maps)).field_mappings) == 2


def test_mobile_attribute_must_be_a_phone():
    [problem] = problems_of(with_(field_mappings=[{"efficy": "MOBILE", "apsis": "com.apsis1.attributes.mobile"}]))
    assert problem == "field_mappings[0].type: found 'string'; allowed: 'phone' for com.apsis1.attributes.mobile"


# --- consent mappings: duplicates and conflicts -----------------------------------------------------------------

MOBILE = [{"efficy": "MOBILE", "apsis": "com.apsis1.attributes.mobile", "type": "phone"}]


def consent(profile, topic, channel="email") -> dict:
    return {"crm_profile": profile, "subscription": f"usercreated.topics.{topic}", "channel": channel}


def test_one_profile_on_both_channels_is_two_mappings_and_fine():
    cfg = config_from_dict(with_(field_mappings=MOBILE, consent_mappings=[consent(12, "a"), consent(12, "a", "sms")]))
    assert len(cfg.consent_mappings) == 2


def test_duplicate_consent_mapping():
    [problem] = problems_of(with_(consent_mappings=[consent(12, "a"), consent(12, "a")]))
    assert problem == "consent_mappings[1]: duplicate of consent_mappings[0]; remove one"


def test_profile_and_channel_mapped_to_two_subscriptions():
    [problem] = problems_of(with_(consent_mappings=[consent(12, "a"), consent(12, "b")]))
    assert problem.startswith(
        "consent_mappings[1].subscription: found 'usercreated.topics.b'; allowed: one subscription"
    )
    assert "consent_mappings[0] already maps profile 12 on email" in problem


def test_subscription_and_channel_fed_by_two_profiles():
    [problem] = problems_of(with_(consent_mappings=[consent(12, "a"), consent(13, "a")]))
    assert problem.startswith("consent_mappings[1].crm_profile: found 13; allowed: one CRM profile")


def test_sms_consent_needs_a_mobile_mapping():
    [problem] = problems_of(with_(consent_mappings=[consent(13, "sms-offers", "sms")]))
    assert problem.startswith("consent_mappings[0].channel: found 'sms'")
    assert "com.apsis1.attributes.mobile" in problem


def test_sms_consent_needs_the_mobile_attribute_exactly_as_the_sync_reads_it():
    """`...attributes.Mobile` passed a case-insensitive check; the sync then found no mobile number, ever."""
    other_case = [{"efficy": "MOBILE", "apsis": "com.apsis1.attributes.Mobile", "type": "phone"}]
    problems = problems_of(with_(field_mappings=other_case, consent_mappings=[consent(13, "sms-offers", "sms")]))
    assert any(p.startswith("consent_mappings[0].channel: found 'sms'") for p in problems), problems


def test_a_yes_no_value_is_no_crm_profile_or_query_id():
    """Pydantic's lax int read `crm_profile: true` as CRM profile 1."""
    problems = problems_of(
        with_(
            consent_mappings=[consent(True, "news")],
            tags={"profiles": [{"crm_profile": False, "tag": "t"}], "queries": [{"query": True, "tag": "q"}]},
        )
    )
    for path in ("consent_mappings[0].crm_profile", "tags.profiles[0].crm_profile", "tags.queries[0].query"):
        assert any(p.startswith(path) and "not true or false" in p for p in problems), (path, problems)


def test_conflicts_are_reported_together_with_field_problems():
    paths = paths_of(
        with_(integration_id="Bad", consent_mappings=[consent(12, "a"), consent(12, "b"), consent(0, "c")])
    )
    assert set(paths) == {"integration_id", "consent_mappings[1].subscription", "consent_mappings[2].crm_profile"}


def test_conflicts_cannot_be_bypassed_by_building_the_model_directly():
    with pytest.raises(ValidationError, match="one subscription per CRM profile"):
        IntegrationConfig.model_validate(with_(consent_mappings=[consent(12, "a"), consent(12, "b")]))


# --- tags -------------------------------------------------------------------------------------------------------


def test_tags_and_schedules():
    tags = {
        "profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}],
        "queries": [
            {"query": 3618, "tag": "vip", "schedule": "rate(1 day)"},
            {"query": 3619, "tag": "gold", "schedule": "cron(0 3 * * ? *)"},
        ],
    }
    cfg = config_from_dict(with_(tags=tags))
    assert [q.schedule for q in cfg.tags.queries] == ["rate(1 day)", "cron(0 3 * * ? *)"]


def test_one_tag_from_two_sources_conflicts():
    tags = {"profiles": [{"crm_profile": 12, "tag": "vip"}], "queries": [{"query": 1, "tag": "vip"}]}
    [problem] = problems_of(with_(tags=tags))
    assert problem.startswith("tags.queries[0].tag: found 'vip'")
    assert "tags.profiles[0] already does" in problem


@pytest.mark.parametrize("schedule", ["daily", "rate(0 days)", "cron(0 3 * *)", "rate(1 week)"])
def test_bad_schedules(schedule):
    [problem] = problems_of(with_(tags={"queries": [{"query": 1, "tag": "t", "schedule": schedule}]}))
    assert problem.startswith("tags.queries[0].schedule:")


# --- schema -----------------------------------------------------------------------------------------------------


def test_json_schema_accepts_examples_and_rejects_two_operators():
    schema = json_schema()
    for name in ("acme.yaml", "active-not-robinson.yaml", "demo.yaml"):
        jsonschema.validate(yaml.safe_load((EXAMPLES / name).read_text()), schema)
    jsonschema.validate(config_to_dict(load_config_file(EXAMPLES / "demo.yaml")), schema)
    bad = with_(sync_conditions=[{"field": "A", "equals": "1", "in": ["1"]}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_(on_delete="shred"), schema)


# --- round trip (property) ----------------------------------------------------------------------------------------

_slug = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_field = st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True)
# the characters a condition value may hold (config/entry_checks.py refuses controls, separators, unassigned)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Zs", "Zl", "Zp")), max_size=8)
_condition = st.one_of(
    st.builds(lambda f, v: {"field": f, "equals": v}, _field, _text),
    st.builds(lambda f, v: {"field": f, "not_equals": v}, _field, _text),
    st.builds(lambda f, v: {"field": f, "in": v}, _field, st.lists(_text, min_size=1, max_size=3)),
    st.builds(lambda f: {"field": f, "is_empty": True}, _field),
    st.builds(lambda f: {"field": f, "not_empty": True}, _field),
)


@st.composite
def configs(draw) -> dict:
    # one condition per field: two on one field may exclude each other, which validation refuses (entry_checks)
    conditions = draw(st.lists(_condition, max_size=4, unique_by=lambda c: c["field"]))
    data = with_(integration_id=draw(_slug), sync_conditions=conditions)
    profiles = draw(st.lists(st.integers(1, 10**6), unique=True, max_size=4))
    data["consent_mappings"] = [consent(p, f"t{p}") for p in profiles]
    data["tags"] = {"profiles": [{"crm_profile": p, "tag": f"tag-{p}"} for p in profiles[:2]]}
    data["on_condition_lost"] = draw(st.sampled_from(["leave", "untag", "delete"]))
    data["full_sync"] = {"max_concurrency": draw(st.integers(1, 100))}
    return data


@settings(max_examples=examples(40), deadline=None)
@given(configs())
def test_round_trip_through_yaml_and_dict(data):
    cfg = config_from_dict(data)
    assert load_config_text(config_to_yaml(cfg)) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert diff_configs(cfg, load_config_text(config_to_yaml(cfg))) == []


# --- remote references ------------------------------------------------------------------------------------------


def test_references_list_what_must_exist_remotely():
    refs = references(load_config_file(EXAMPLES / "demo.yaml"))
    assert refs["efficy"]["fields"] == [
        "EMAIL1",
        "FIRSTNAME",
        "K_CONTACT",
        "LANGUAGE",
        "MOBILE",
        "NAME",
        "OPENED",
        "ROBINSON",
    ]
    assert refs["efficy"]["crm_profiles"] == [12, 13, 14]
    assert refs["efficy"]["queries"] == [3618]
    assert "com.apsis1.attributes.email" in refs["apsis"]["attributes"]
    assert refs["apsis"]["topics"] == [
        "usercreated.topics.events-ef56",
        "usercreated.topics.newsletter-ab12",
        "usercreated.topics.sms-offers-cd34",
    ]
    assert refs["apsis"]["tags"] == ["newsletter-readers", "sms-club", "vip"]
    assert refs["apsis"]["sections"] == ["com.apsis1.sections.default"]


def test_check_references_names_each_missing_thing_with_its_path():
    cfg = load_config_file(EXAMPLES / "demo.yaml")
    available = references(cfg)
    assert check_references(cfg, available) == []
    available["efficy"]["fields"] = [f.lower() for f in available["efficy"]["fields"] if f != "ROBINSON"]
    available["apsis"]["topics"] = ["usercreated.topics.newsletter-ab13", "usercreated.topics.sms-offers-cd34"]
    del available["efficy"]["queries"]  # could not be listed: not checked
    problems = {p.path: str(p) for p in check_references(cfg, available)}
    assert set(problems) == {
        "sync_conditions[1].field",
        "consent_mappings[0].subscription",
        "consent_mappings[2].subscription",
    }
    assert "did you mean 'usercreated.topics.newsletter-ab13'?" in problems["consent_mappings[0].subscription"]
    assert "not found there" in problems["sync_conditions[1].field"]


def test_check_references_compares_profile_ids_as_numbers_or_text():
    cfg = load_config_file(EXAMPLES / "demo.yaml")
    assert check_references(cfg, {"efficy": {"crm_profiles": ["12", "13", 14]}}) == []
    [problem] = check_references(cfg, {"efficy": {"crm_profiles": [12, 13]}})
    assert problem.path == "consent_mappings[2].crm_profile"


# --- changes between versions -----------------------------------------------------------------------------------


def test_diff_configs_lists_changes_line_by_line():
    old = load_config_file(EXAMPLES / "demo.yaml")
    data = config_to_dict(old)
    data["full_sync"]["max_concurrency"] = 10
    data["consent_mappings"] = data["consent_mappings"][:2]
    data["tags"]["queries"].append({"query": 4000, "tag": "gold"})
    data["efficy"]["customer"] = "acme"
    changes = diff_configs(old, config_from_dict(data))
    assert "full_sync.max_concurrency: 5 -> 10" in changes
    assert "efficy.customer: set to 'acme'" in changes
    assert any(c.startswith("consent_mappings: removed {crm_profile: 14") for c in changes)
    assert "tags.queries: added {query: 4000, tag: 'gold'}" in changes
    assert len(changes) == 4
    assert diff_configs(None, old) == ["new integration 'demo'"]


def test_diff_configs_reports_reordering():
    old = config_from_dict(with_(sync_conditions=[{"field": "A", "equals": "1"}, {"field": "B", "equals": "1"}]))
    new = config_from_dict(with_(sync_conditions=[{"field": "B", "equals": "1"}, {"field": "A", "equals": "1"}]))
    assert diff_configs(old, new) == ["sync_conditions: reordered"]


# --- assumed API facts are settings -----------------------------------------------------------------------------


def test_assumed_api_facts_have_defaults_and_can_be_corrected():
    cfg = config_from_dict(BASE)
    assert cfg.efficy.error_codes.not_found == ["RECORD_NOT_FOUND"]
    assert cfg.apsis.profile_tags_path.endswith("/profiles/{key}/sections/{section}/tags")
    data = copy.deepcopy(BASE)
    data["efficy"]["error_codes"] = {"not_found": ["GONE", "RECORD_NOT_FOUND"]}
    data["apsis"]["profile_tags_path"] = "/v3/keyspaces/{keyspace}/profiles/{key}/tags"
    cfg = config_from_dict(data)
    assert cfg.efficy.error_codes.not_found == ["GONE", "RECORD_NOT_FOUND"]
    assert cfg.efficy.error_codes.relation_exists == ["LINK_EXISTS"]
    assert cfg.apsis.profile_tags_path == "/v3/keyspaces/{keyspace}/profiles/{key}/tags"


@pytest.mark.parametrize(
    ("path", "why"),
    [("/profiles/tags", "contains {key}"), ("profiles/{key}/tags", "starting with '/'"), ("/p/{key}/{id}", "only")],
)
def test_a_tags_path_without_the_profile_key_is_refused(path, why):
    data = copy.deepcopy(BASE)
    data["apsis"]["profile_tags_path"] = path
    (problem,) = problems_of(data)
    assert "apsis.profile_tags_path" in problem and why in problem


def test_an_empty_error_code_list_is_refused():
    data = copy.deepcopy(BASE)
    data["efficy"]["error_codes"] = {"not_found": []}
    assert paths_of(data) == ["efficy.error_codes.not_found"]


# --- YAML 1.1 implicit typing: a value reaches the engine as typed, or is refused ---------------------------

_TEXT_HEAD = """\
integration_id: acme-eu
efficy: {base_url: "https://acme.efficy.cloud/crm", api_key_secret: efficy-sync/acme-eu/efficy,
         webhook_secret_secret: efficy-sync/acme-eu/webhook}
apsis:  {base_url: "https://api.apsis.one", section: com.apsis1.sections.default,
         credentials_secret: efficy-sync/acme-eu/apsis, optout_token_secret: efficy-sync/acme-eu/apsis-optout}
"""


@pytest.mark.parametrize("word", ["NO", "no", "yes", "on", "off", "y", "n", "Y", "true", "False"])
@pytest.mark.parametrize("operator", ["equals", "not_equals", "in"])
def test_an_unquoted_yes_no_word_in_a_condition_is_refused_with_line_and_hint(word, operator):
    value = f"[{word}]" if operator == "in" else word
    text = _TEXT_HEAD + f"sync_conditions:\n  - field: COUNTRY\n    {operator}: {value}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    [problem] = info.value.problems
    path = f"sync_conditions[0].{operator}" + ("[0]" if operator == "in" else "")
    assert problem.path == path
    assert problem.line == 8
    assert f"'{word}' (in quotes)" in str(problem) and "(line 8)" in str(problem)


@pytest.mark.parametrize("word", ["NO", "yes", "on", "off", "y", "n", "true"])
def test_a_quoted_yes_no_word_reaches_the_engine_as_the_text(word):
    cfg = load_config_text(_TEXT_HEAD + f"sync_conditions:\n  - {{field: COUNTRY, equals: '{word}'}}\n")
    assert cfg.sync_conditions[0].expected == word
    assert load_config_text(config_to_yaml(cfg)) == cfg  # `config show` quotes it again


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1", "1"),
        ("0", "0"),
        ("017", "017"),  # YAML 1.1: octal 15
        ("1:30", "1:30"),  # YAML 1.1: base 60, 90
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("1.50", "1.50"),
        ("1e3", "1e3"),
        ("0x1F", "0x1F"),
        ("2024-01-01", "2024-01-01"),  # YAML 1.1: a date
        ("NOR", "NOR"),
    ],
)
def test_a_plain_value_in_a_condition_is_the_text_typed(typed, expected):
    text = _TEXT_HEAD + f"sync_conditions:\n  - {{field: CODE, equals: {typed}}}\n  - {{field: L, in: [{typed}, X]}}\n"
    cfg = load_config_text(text)
    assert cfg.sync_conditions[0].expected == expected
    assert cfg.sync_conditions[1].expected == [expected, "X"]
    assert load_config_text(config_to_yaml(cfg)) == cfg


def test_other_text_fields_take_the_text_typed_and_numbers_follow_yaml_1_2():
    text = _TEXT_HEAD.replace("acme-eu/apsis-optout}", "acme-eu/apsis-optout}\n") + (
        "consent_mappings:\n  - {crm_profile: 012, subscription: usercreated.topics.news-ab12, channel: email}\n"
        "tags:\n  profiles: [{crm_profile: 14, tag: 2024}, {crm_profile: 15, tag: on}]\n"
        "  queries: [{query: 3618, tag: 1:30}]\n"
        "full_sync: {page_size: 0o17}\n"
    )
    cfg = load_config_text(text)
    assert cfg.consent_mappings[0].crm_profile == 12  # YAML 1.1 would read octal 10: another CRM profile
    assert [t.tag for t in cfg.tags.profiles] == ["2024", "on"]
    assert cfg.tags.queries[0].tag == "1:30"
    assert cfg.full_sync.page_size == 15  # an explicit 0o octal is still a number


def test_a_base_60_number_where_a_number_is_expected_is_refused_not_converted():
    text = (
        _TEXT_HEAD + "consent_mappings:\n  - {crm_profile: 1:30, subscription: usercreated.topics.x, channel: email}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert [(p.path, p.line) for p in info.value.problems] == [("consent_mappings[0].crm_profile", 7)]
    assert "found '1:30'" in str(info.value.problems[0])


def test_is_empty_takes_only_true():
    cfg = load_config_text(_TEXT_HEAD + "sync_conditions: [{field: EMAIL1, not_empty: true}]\n")
    assert cfg.sync_conditions[0].operator == "not_empty"
    with pytest.raises(ConfigError, match="not_empty: found 'yes'; allowed: true"):
        load_config_text(_TEXT_HEAD + "sync_conditions: [{field: EMAIL1, not_empty: yes}]\n")


# --- secret names follow the convention the functions' IAM policies are scoped by ---------------------------


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("webhook_secret_secret", "efficy-sync/acme-eu/apsis-optout"),  # another kind: the webhook Lambda may not
        ("webhook_secret_secret", "acme/webhook"),  # outside the efficy-sync/ prefix
        ("api_key_secret", "efficy-sync/efficy"),  # no integration part
        ("api_key_secret", "efficy-sync/acme-eu/efficy-key"),
    ],
)
def test_a_secret_the_functions_may_not_read_is_refused_with_its_line(field, name):
    text = _TEXT_HEAD.replace(
        f"{field}: efficy-sync/acme-eu/{'webhook' if field == 'webhook_secret_secret' else 'efficy'}",
        f"{field}: {name}",
    )
    assert name in text
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    [problem] = info.value.problems
    assert problem.path == f"efficy.{field}"
    assert problem.line in (2, 3)
    kind = "webhook" if field == "webhook_secret_secret" else "efficy"
    assert f"efficy-sync/<integration>/{kind}" in str(problem)


def test_secret_names_by_convention_are_accepted_even_when_shared_between_integrations():
    text = _TEXT_HEAD.replace("efficy-sync/acme-eu/apsis,", "efficy-sync/shared/eu-account/apsis,")
    assert load_config_text(text).apsis.credentials_secret == "efficy-sync/shared/eu-account/apsis"
