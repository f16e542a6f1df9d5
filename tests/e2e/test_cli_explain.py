"""`efficy-sync explain demo KEY` against the local stack: the person as Efficy has it, and the stored state."""

from __future__ import annotations

import json
from typing import Any

from tests.support import Stack, person, wait_for


def explain_json(stack: Stack, key: int) -> dict[str, Any]:
    return json.loads(stack.cli("explain", "demo", str(key), "--format", "json", check=True).stdout)


def test_explain_names_the_condition_that_failed(stack: Stack, key: int) -> None:
    stack.seed([person(key, ROBINSON="1")])

    result = stack.cli("explain", "demo", str(key), check=True)

    out = result.stdout
    assert "[ok] OPENED equals '1' passed: value is '1'" in out
    assert "[FAIL] ROBINSON equals '0' failed: value is '1'" in out
    assert "not synced: ROBINSON equals '0' failed: value is '1'" in out
    assert "would send: nothing" in out  # never created in APSIS One
    assert f"p{key}@example.com" not in out

    report = explain_json(stack, key)
    assert report["decision"] == "skip"
    assert report["failed_condition"] == "ROBINSON equals '0'"
    assert [c["passed"] for c in report["conditions"]] == [True, False]


def test_explain_before_and_after_sync(stack: Stack, key: int) -> None:
    stack.seed([person(key, FIRSTNAME="Ada", profiles=[12])])

    before = stack.cli("explain", "demo", str(key), check=True).stdout
    assert f"create profile {key} in com.apsis1.keyspaces.crm-id" in before
    assert "set consent opt-in on usercreated.topics.newsletter-ab12 (email)" in before
    assert "last sync: never" in before

    stack.edit(key, FIRSTNAME="Grace")  # Efficy sends the webhook; the worker syncs the person
    wait_for("the profile in APSIS One", lambda: stack.profile(key))

    def synced() -> dict[str, Any] | None:
        report = explain_json(stack, key)
        return report if report["last"].get("outcome") == "synced" and not report["operations"] else None

    report = wait_for("explain to see the person synced", synced, timeout=30, interval=0.5)
    assert report["decision"] == "sync"
    newsletter = next(c for c in report["consents"] if c["topic"] == "usercreated.topics.newsletter-ab12")
    assert (newsletter["decision"], newsletter["last_pushed"], newsletter["would_send"]) == ("opt-in", "opt-in", False)
    sms = next(c for c in report["consents"] if c["channel"] == "sms")
    assert sms["member"] is False and sms["would_send"] is False

    after = stack.cli("explain", "demo", str(key), check=True).stdout
    assert "would send: nothing" in after
    assert "usercreated.topics.newsletter-ab12 (email, CRM profile 12): opt-in - " in after
    assert "com.apsis1.attributes.firstname = 'G***' [unchanged]" in after
    assert "last sync: synced, state stored at " in after
    for personal in ("Grace", f"p{key}@example.com", f"Name{key}"):
        assert personal not in after, personal


def test_explain_a_person_efficy_does_not_know(stack: Stack, key: int) -> None:
    result = stack.cli("explain", "demo", str(key))

    assert result.returncode == 1
    assert "not found in Efficy" in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"efficy-sync: person {key} is not known to Efficy (integration demo, {stack.efficy_url})"
    ]


def test_explain_an_unknown_integration(stack: Stack, key: int) -> None:
    result = stack.cli("explain", "no-such-integration", str(key))

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "unknown integration 'no-such-integration'" in result.stderr


def test_explain_names_profile_rows_whose_status_nobody_configured(stack: Stack, key: int) -> None:
    """A server whose CRM-profile rows carry a consent status (contract §5: not documented either way): the
    person's consents are left as they are, and explain says why, naming the column."""
    server = f"{stack.efficy_url}/_sim/server"
    stack.seed([person(key, profiles=[12])])
    stack.http.post(server, json={"profile_status_column": "STATUS"}, timeout=10).raise_for_status()
    try:
        report = explain_json(stack, key)
    finally:
        stack.http.post(server, json={"profile_status_column": None}, timeout=10).raise_for_status()
    assert report["consents"] and all(c["decision"] is None for c in report["consents"])
    assert all("carry STATUS" in c["reason"] and "efficy.profile_status" in c["reason"] for c in report["consents"])
    assert explain_json(stack, key)["consents"][0]["decision"] == "opt-in"  # the plain rows again
