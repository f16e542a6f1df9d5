"""Sync health from stored states and mapped persons: categories, persons, details without personal data."""

from __future__ import annotations

from typing import Any

from efficy_sync.changes import ContactChange
from efficy_sync.config import load_config_text
from efficy_sync.health import (
    CATEGORIES,
    RETRY_ALL,
    build_report,
    category,
    data_findings,
    render_health,
    retry_changes,
    state_findings,
)
from efficy_sync.mapping import Desired, map_person
from efficy_sync.state import PersonState

from tests.support import ROOT


def state(key: int, outcome: str | None, **fields: Any) -> PersonState:
    return PersonState(integration_id="acme", person_key=str(key), last_outcome=outcome, **fields)


def demo_config() -> Any:
    return load_config_text((ROOT / "examples" / "demo.yaml").read_text())


def test_failed_states_are_grouped_by_their_error_category() -> None:
    states = [
        state(1, "failed", error_category="rejected_value", error_detail="APSIS patch_attributes: 400 jo@example.com"),
        state(2, "failed", error_category="rejected_value", error_detail="APSIS patch_attributes: 400 other"),
        state(3, "failed", error_category="permission", error_detail="APSIS token: 403"),
        state(4, "synced"),
        state(5, "skipped", skip_reason="ROBINSON equals '0' failed: value is '1'"),
        state(6, "synced", error_category="email_conflict", error_detail="held back: j***@example.com"),
        state(7, "failed", error_category="brand_new_category"),
    ]
    report = build_report("acme", states, dead_lettered=[9, 9])

    assert report.persons["known"] == 7 and report.persons["synced"] == 2
    assert report.persons_in("rejected_value") == ["1", "2"]
    assert report.persons_in("permission") == ["3"]
    assert report.persons_in("email_conflict") == ["6"]
    assert report.persons_in("conditions") == ["5"]
    assert report.persons_in("dead_lettered") == ["9"]
    assert report.persons_in(RETRY_ALL) == ["1", "2", "3", "6", "7", "9"]  # failures only, not the skipped one
    assert report.failing() == 6
    assert category("brand_new_category").kind == "failure"
    details = report.categories["rejected_value"].details
    assert "APSIS patch_attributes: 400 j***@example.com" in details  # masked again for the report
    assert report.categories["conditions"].details == {"ROBINSON equals '0'": 1}  # the value is left out


def test_synced_deleted_and_unknown_states_have_no_findings() -> None:
    assert state_findings(state(1, "synced")) == []
    assert state_findings(state(2, "deleted")) == []
    assert state_findings(state(3, None)) == []
    assert [
        f.category for f in state_findings(state(4, "skipped", skip_reason="the person has no valid K_CONTACT"))
    ] == ["no_key"]


def test_data_findings_name_fields_not_values() -> None:
    cfg = demo_config()
    base = {"K_CONTACT": 7, "OPENED": "1", "ROBINSON": "0", "FIRSTNAME": "Jo", "NAME": "Doe", "LANGUAGE": "EN"}
    no_email = map_person(cfg, {**base, "EMAIL1": "", "MOBILE": "+32470000001", "profiles": [12]})
    bad_phone = map_person(cfg, {**base, "EMAIL1": "jo@example.com", "MOBILE": "0470 12", "profiles": [13]})
    bad_email = map_person(cfg, {**base, "EMAIL1": "jo@", "MOBILE": "+32470000001", "profiles": []})
    assert isinstance(no_email, Desired) and isinstance(bad_phone, Desired) and isinstance(bad_email, Desired)

    assert {f.category for f in data_findings(7, no_email)} == {"missing_email"}
    phone = data_findings(7, bad_phone)
    assert {f.category for f in phone} == {"invalid_phone", "missing_mobile"}
    assert all("0470" not in (f.detail or "") for f in phone)
    assert [f.category for f in data_findings(7, bad_email)] == ["invalid_email"]
    fine = map_person(cfg, {**base, "EMAIL1": "jo@example.com", "MOBILE": "+32470000001", "profiles": [12]})
    assert isinstance(fine, Desired) and data_findings(7, fine) == []


def test_profile_rows_that_do_not_say_in_or_out_have_their_own_category() -> None:
    """Not "invalid value": the cause is a setting (efficy.profile_status), and consents are what is left."""
    from efficy_sync.profile_rows import PROFILES_UNREAD

    base = {"K_CONTACT": 7, "OPENED": "1", "ROBINSON": "0", "FIRSTNAME": "Jo", "NAME": "Doe", "LANGUAGE": "EN"}
    base.update(EMAIL1="jo@example.com", MOBILE="+32470000001")
    unread = map_person(demo_config(), {**base, PROFILES_UNREAD: "CRM profile rows carry STATUS, which ..."})
    not_loaded = map_person(demo_config(), base)  # fetched without profiles: not a data problem
    assert isinstance(unread, Desired) and isinstance(not_loaded, Desired)
    assert [(f.category, f.detail) for f in data_findings(7, unread)] == [("profiles_unread", "profiles")]
    assert data_findings(7, not_loaded) == []
    assert category("profiles_unread").kind == "data" and "efficy.profile_status" in category("profiles_unread").advice


def test_the_exit_code_counts_failures_and_dead_letters_not_data_problems_or_skips() -> None:
    """README "Exit codes": health's 6 is for an operator; a data problem or a skip by design is not one."""
    from efficy_sync.health import Finding
    from efficy_sync_tools.commands._aws import EXIT_FOUND, EXIT_OK
    from efficy_sync_tools.commands.health import exit_code

    skipped = state(5, "skipped", skip_reason="the person has no valid K_CONTACT")
    quiet = build_report("acme", [state(4, "synced"), skipped], data=[Finding("4", "missing_email")])
    assert exit_code(quiet) == EXIT_OK
    assert exit_code(build_report("acme", [skipped], dead_letter_queues={"contact": 0, "optout": 0})) == EXIT_OK
    assert exit_code(build_report("acme", [state(1, "failed", error_category="permission")])) == EXIT_FOUND
    assert exit_code(build_report("acme", [], dead_lettered=[9])) == EXIT_FOUND
    assert exit_code(build_report("acme", [], dead_letter_queues={"contact": 0, "bundle": 2})) == EXIT_FOUND


def test_retry_changes_are_resyncs_that_sqs_does_not_deduplicate_away() -> None:
    first = retry_changes("acme", ["3", 1, 3])
    second = retry_changes("acme", [1])
    assert [c.person_key for c in first] == [3, 1]
    assert all(isinstance(c, ContactChange) and (c.operation, c.source) == ("Resync", "retry") for c in first)
    assert first[1].dedup_id != second[0].dedup_id  # a second retry of the same person is not dropped
    assert first[0].group_id == "acme#3"


def test_render_lists_failures_first_with_the_retry_command_and_a_limit() -> None:
    states = [state(k, "failed", error_category="rejected_value") for k in range(1, 26)]
    states.append(state(99, "skipped", skip_reason="OPENED equals '1' failed: value is '0'"))
    text = render_health(build_report("acme", states, dead_letter_queues={"contact": 2, "optout": 0}), limit=3)
    assert text.index("Failures") < text.index("Not synced by design")
    assert "rejected value [rejected_value]: 25 person(s)\n    persons: 1, 2, 3 ... and 22 more" in text
    assert "then: efficy-sync health acme --retry rejected_value" in text
    assert "--retry conditions" not in text
    assert "dead-letter queues (all integrations): contact 2, optout 0" in text
    assert "not checked: add --check-data" in text
    assert "No failures" in render_health(build_report("acme", [state(1, "synced")]))
    # found by probing: opt-outs no contact matches sat in the DLQ (an alarm to act on the same day) while
    # health said every known person was in step
    waiting = render_health(build_report("acme", [state(1, "synced")], dead_letter_queues={"optout": 1}))
    assert "every known person is in step" not in waiting and "1 message(s) wait in dead-letter queues" in waiting


def test_every_category_has_a_kind_and_advice() -> None:
    for name, c in CATEGORIES.items():
        assert c.name == name and c.kind in ("failure", "data", "skipped") and c.advice.endswith(".")


def test_a_dead_letter_queue_that_cannot_be_read_is_no_all_clear(monkeypatch: Any) -> None:
    """`health` exits 0 for "nothing in the dead-letter queues" (README "Exit codes"), so a queue it could not read
    (access denied, throttled, AWS out of reach) must not pass for an empty one: it was printed as "not found" and
    left out of the depths, and a schedule alerting on the exit code saw 0. A queue this deployment does not have
    (no such output: a CliError) is still skipped."""
    import pytest
    from botocore.exceptions import ClientError
    from efficy_sync_tools.commands import dlq, health
    from efficy_sync_tools.commands._aws import CliError

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")

    def absent(name: str) -> tuple[str, str]:
        raise CliError(f"stack 'efficy-sync' has no output for the {name} queue")

    monkeypatch.setattr(dlq, "_urls", absent)
    assert health.peek_dead_letters("acme", 10) == (None, {})

    def denied(name: str) -> tuple[str, str]:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetQueueAttributes")

    monkeypatch.setattr(dlq, "_urls", denied)
    with pytest.raises(ClientError):
        health.peek_dead_letters("acme", 10)
