"""`explain` and the masking helpers: why a person did or did not sync, with personal data masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from efficy_sync.config import load_config_file
from efficy_sync.consent import OptOutRecord, merge_optouts
from efficy_sync.explain import explain, mask_attribute, render_explain
from efficy_sync.mapping import map_person
from efficy_sync.person_plan import plan_operations
from efficy_sync.pii import hash_key, looks_like_pii, mask_email, mask_phone, mask_text, mask_value
from efficy_sync.state_updates import apply_operations

CFG = load_config_file(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
SECRETS = ("john.doe", "+32470000001", "Johnny", "Doe")


def person(**changes) -> dict:
    base = {
        "K_CONTACT": 1,
        "NAME": "Doe",
        "FIRSTNAME": "Johnny",
        "EMAIL1": "john.doe@Example.com",
        "MOBILE": "+32470000001",
        "LANGUAGE": "FR",
        "OPENED": "1",
        "ROBINSON": "0",
        "profiles": [12, 13],
        "D_CHANGE": "2024-05-01T10:00:00",
    }
    base.update(changes)
    return base


def assert_no_personal_data(report: dict) -> None:
    text = json.dumps(report) + render_explain(report)
    for secret in SECRETS:
        assert secret not in text, secret


# --- masking --------------------------------------------------------------------------------------------------


def test_mask_email_and_phone():
    assert mask_email("john.doe@Example.com") == "j***@example.com"
    assert mask_email("") == ""
    assert mask_email("no-at-sign") == "n***"
    assert mask_phone("+32470000001") == "+32*****01"
    assert mask_phone("+1 555 0100 99") == "+1 *****99"
    assert mask_phone("123") == "*****"
    assert mask_text("Johnny") == "J***"


def test_mask_value_by_field_name_and_shape():
    assert mask_value("FIRSTNAME", "Johnny") == "J***"
    assert mask_value("MOBILE", "+32470000001") == "+32*****01"
    assert mask_value("NOTE", "reach me at jo@example.com") == "reach me at j***@example.com"
    assert mask_value("ANYTHING", "jo@example.com") == "j***@example.com"
    assert mask_value("LANGUAGE", "FR") == "FR"
    assert mask_value("OPENED", "1") == "1"
    assert looks_like_pii("EMAIL2") and looks_like_pii("com.apsis1.attributes.lastname")
    assert not looks_like_pii("ROBINSON")


def test_hash_key_is_stable_and_opaque():
    assert hash_key("123") == hash_key(123)
    assert hash_key("123") != hash_key("124")
    assert "123" not in hash_key("123")
    assert hash_key("123", salt="a") != hash_key("123")


@pytest.mark.parametrize(
    ("attribute", "value", "shown"),
    [
        ("com.apsis1.attributes.email", "john.doe@example.com", "j***@example.com"),
        ("com.apsis1.attributes.mobile", "+32470000001", "+32*****01"),
        ("com.apsis1.attributes.firstname", "Johnny", "J***"),
        ("com.apsis1.attributes.crmid", "1", "1"),
        ("usercreated.attributes.language", "FR", "FR"),
        ("usercreated.attributes.unknown", None, None),
    ],
)
def test_mask_attribute(attribute, value, shown):
    assert mask_attribute(CFG, attribute, value) == shown


# --- explain --------------------------------------------------------------------------------------------------


def test_person_failing_a_condition_is_told_which_and_why():
    report = explain(CFG, person(ROBINSON="1"), None)
    assert report["decision"] == "skip"
    assert report["failed_condition"] == "ROBINSON equals '0'"
    assert report["skip_reason"] == "ROBINSON equals '0' failed: value is '1'"
    assert [c["passed"] for c in report["conditions"]] == [True, False]
    assert report["operations"] == []
    text = render_explain(report)
    assert "[FAIL] ROBINSON equals '0' failed: value is '1'" in text
    assert "not synced: ROBINSON equals '0' failed: value is '1'" in text
    assert_no_personal_data(report)


def test_new_person_shows_mapped_values_masked_and_what_would_be_sent():
    report = explain(CFG, person(), None, query_tags={"vip"})
    assert report["decision"] == "sync"
    assert report["email"] == "j***@example.com"
    assert report["mobile"] == "+32*****01"
    values = {a["attribute"]: (a["value"], a["status"]) for a in report["attributes"]}
    assert values["com.apsis1.attributes.firstname"] == ("J***", "new")
    assert values["usercreated.attributes.language"] == ("FR", "new")
    consents = {(c["topic"], c["channel"]): c for c in report["consents"]}
    news = consents["usercreated.topics.newsletter-ab12", "email"]
    assert (news["decision"], news["would_send"], news["member"]) == ("opt-in", True, True)
    events = consents["usercreated.topics.events-ef56", "email"]
    assert events["decision"] is None and "nothing to withdraw" in events["reason"]
    assert report["operations"][0] == "create profile 1 in com.apsis1.keyspaces.crm-id"
    assert "set consent opt-in on usercreated.topics.newsletter-ab12 (email)" in report["operations"]
    assert "tags: +newsletter-readers, +sms-club, +vip" in report["operations"]
    assert report["last"] == {"known": False}
    assert "last sync: never" in render_explain(report)
    assert_no_personal_data(report)


def test_synced_person_shows_changes_against_last_pushed_and_last_outcome():
    d = map_person(CFG, person())
    state = apply_operations(None, d, plan_operations(d, None))
    state = state.model_copy(
        update={"last_outcome": "failed", "error_category": "rate_limit", "error_detail": "429 after retries"}
    )
    report = explain(CFG, person(FIRSTNAME="Jonathan", D_CHANGE="2024-05-02T00:00:00"), state)
    statuses = {a["attribute"]: a["status"] for a in report["attributes"]}
    assert statuses["com.apsis1.attributes.firstname"] == "changed"
    assert statuses["com.apsis1.attributes.lastname"] == "unchanged"
    assert report["operations"] == ["patch attributes: com.apsis1.attributes.firstname='J***'"]
    assert report["last"]["outcome"] == "failed"
    assert report["last"]["error_category"] == "rate_limit"
    assert "error rate_limit: 429 after retries" in render_explain(report)


def test_unchanged_person_would_send_nothing():
    d = map_person(CFG, person())
    state = apply_operations(None, d, plan_operations(d, None))
    report = explain(CFG, person(), state)
    assert report["operations"] == []
    assert "would send: nothing" in render_explain(report)
    assert "last sync: synced" in render_explain(report)


def test_a_first_opt_in_for_a_synced_person_says_apsis_is_read_first():
    """explain does not call APSIS: it says the sync will, so its "opt-in" is not read as a promise."""
    d = map_person(CFG, person())
    state = apply_operations(None, d, plan_operations(d, None))  # synced, in profiles 12 and 13 only
    report = explain(CFG, person(profiles=[12, 13, 14], D_CHANGE="2024-05-02T00:00:00"), state)
    consents = {c["topic"]: c for c in report["consents"]}
    events = consents["usercreated.topics.events-ef56"]
    assert events["decision"] == "opt-in" and "reads APSIS One's consents first" in events["reason"]
    assert "reads APSIS" not in consents["usercreated.topics.newsletter-ab12"]["reason"]  # sent before
    new = explain(CFG, person(profiles=[14]), None)  # a person new to us: only with existing_optouts "always"
    assert "reads APSIS" not in next(c for c in new["consents"] if c["topic"].endswith("events-ef56"))["reason"]


def test_pending_apsis_opt_out_is_explained():
    d = map_person(CFG, person())
    state = apply_operations(None, d, plan_operations(d, None))
    record = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis-unsubscribe")
    state = merge_optouts(state, {"usercreated.topics.newsletter-ab12|email": record})  # as the store reads it
    report = explain(CFG, person(D_CHANGE="2024-05-01T12:00:00"), state)
    news = next(c for c in report["consents"] if c["topic"] == "usercreated.topics.newsletter-ab12")
    assert news["decision"] == "opt-out" and news["last_pushed"] == "opt-out" and not news["would_send"]
    assert "has not confirmed" in news["reason"]
    assert news["optout"]["confirmed"] is False


def test_skipped_fields_and_consents_are_listed():
    report = explain(CFG, person(MOBILE="0470 00 00 01"), None)
    assert {"field": "MOBILE", "reason": "not an international phone number (+ and 8-15 digits)"} in report[
        "skipped_fields"
    ]
    sms = next(c for c in report["consents"] if c["channel"] == "sms")
    assert sms["decision"] is None and sms["reason"] == "missing mobile number"
    assert "0470" not in render_explain(report)


def test_stale_snapshot_is_flagged():
    d = map_person(CFG, person(D_CHANGE="2024-05-02T00:00:00"))
    state = apply_operations(None, d, plan_operations(d, None))
    report = explain(CFG, person(FIRSTNAME="Old"), state)
    assert report["stale"] is True and report["operations"] == []
    assert "older than the one last applied" in render_explain(report)


def test_person_not_found_in_efficy():
    d = map_person(CFG, person())
    state = apply_operations(None, d, plan_operations(d, None))
    report = explain(CFG, None, state)
    assert report["found_in_efficy"] is False and report["person_key"] == "1"
    assert "not found in Efficy (on_delete: ignore)" in render_explain(report)


def test_profile_rows_that_could_not_be_read_say_why_on_each_consent():
    """efficy_sync.profile_rows: the reason the client put on the person, not "not loaded", reaches explain."""
    from efficy_sync.profile_rows import PROFILES_UNREAD

    unread = person(profiles=None, **{PROFILES_UNREAD: "CRM profile rows carry STATUS, which ..."})
    del unread["profiles"]
    report = explain(CFG, unread, None)
    assert report["consents"] and all(
        c["decision"] is None and "carry STATUS" in c["reason"] and not c["would_send"] for c in report["consents"]
    )
    assert not any("consent" in op for op in report["operations"])
