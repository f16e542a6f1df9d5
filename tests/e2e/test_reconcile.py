"""Issue 15, must show: `reconcile` finds one planted drift of each category on the local stack, `--fix`
repairs them through the sync path (the real-time queue and its worker), and a second `reconcile` reports
zero drift. An opt-out made in APSIS One behind our back stays an opt-out throughout (not drift)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient

from tests.support import Stack, person, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

FIRSTNAME = "com.apsis1.attributes.firstname"
NEWS = "usercreated.topics.newsletter-ab12"
SMS = "usercreated.topics.sms-offers-cd34"
TAGS = {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}, {"crm_profile": 13, "tag": "sms-club"}]}


def _apsis(stack: Stack) -> ApsisClient:
    """A client of our own, for what someone does in APSIS One behind the sync's back."""
    secret = stack.client("secretsmanager").get_secret_value(SecretId=stack.demo["apsis_credentials_secret"])
    creds = json.loads(secret["SecretString"])
    return ApsisClient(
        stack.apsis_url, creds["client_id"], creds["client_secret"], section="com.apsis1.sections.default"
    )


def _reconcile(stack: Stack, iid: str, key: int, *extra: str) -> dict[str, Any]:
    scope = ("--all", "--from-key", str(key), "--to-key", str(key + 99))
    result = stack.cli("reconcile", iid, *scope, *extra, "--output", "json")
    report = json.loads(result.stdout)
    # exit 6 says "drift found and not repaired", so a scheduled script can alert on the code alone
    assert result.returncode == (6 if report["total_drift"] and "--fix" not in extra else 0), result.stderr
    assert "fix" in report and (report["fix"] is None) == ("--fix" not in extra)  # a stable document
    return report


def _consent(stack: Stack, key: int, topic: str) -> str | None:
    for consent in (stack.profile(key) or {}).get("consents", []):
        if consent["topic"] == topic:
            return consent["type"]
    return None


def _examples(report: dict[str, Any], category: str) -> list[str]:
    return [e["person_key"] for e in report["examples"][category]]


def test_reconcile_finds_each_drift_and_fix_repairs_it_through_the_sync_path(
    stack: Stack, key: int, tmp_path: Path
) -> None:
    iid = stack.create_integration(tmp_path, on_delete="delete", on_condition_lost="untag", tags=TAGS)
    missing, deleted, attribute, consent, tag, kept, lost = (key + i for i in range(1, 8))
    synced = [deleted, attribute, consent, tag, kept, lost]
    stack.seed([person(k) for k in synced])  # no webhook: the demo integration does not see them
    records = [
        {"table": 11000, "key": k, "operation": "Create", "fields": {}, "date": "2026-04-01T10:00:00Z"} for k in synced
    ]
    assert stack.signed_webhook(records, integration_id=iid).status_code == 202
    for k in synced:
        wait_for(f"person {k} synced", lambda k=k: _consent(stack, k, NEWS) == "opt-in", timeout=60)
        # the worker sends the tag after the consent and stores the state last: a reconcile in between found the
        # tag missing (drift); wait for the stored outcome, written once every APSIS call of the change is done
        wait_for(f"person {k}'s stored outcome", lambda k=k: stack.stored_state(k, iid).get("last_outcome") == "synced")
    assert _reconcile(stack, iid, key)["total_drift"] == 0

    # ---- one drift of each category, planted in the simulators -------------------------------------------
    stack.seed([person(missing)])  # in Efficy and matching; its webhook never came
    stack.http.delete(f"{stack.efficy_url}/_sim/persons/{deleted}", timeout=10).raise_for_status()  # (webhook: demo's)
    stack.seed([person(lost, ROBINSON="1")])  # no longer matches; webhook lost
    apsis = _apsis(stack)
    apsis.patch_attributes(str(attribute), {FIRSTNAME: "Changed in APSIS"})
    apsis.set_consent(str(consent), SMS, "sms", "opt-in")  # not in CRM profile 13: the rules say opt-out
    apsis.patch_tags(str(tag), {"newsletter-readers": False})
    apsis.set_consent(str(kept), NEWS, "email", "opt-out")  # an unsubscribe by API: never turned back

    report = _reconcile(stack, iid, key)

    assert report["counts"] == {"missing": 1, "orphaned": 2, "attributes": 1, "consents": 1, "tags": 1}
    assert _examples(report, "missing") == [str(missing)]
    assert sorted(_examples(report, "orphaned")) == sorted([str(deleted), str(lost)])
    assert _examples(report, "attributes") == [str(attribute)]
    assert report["examples"]["attributes"][0]["details"] == [{"attribute": FIRSTNAME, "should": "update"}]
    assert report["examples"]["consents"][0] == {
        "person_key": str(consent),
        "details": [{"topic": SMS, "channel": "sms", "apsis": "opt-in", "rules": "opt-out"}],
    }
    assert _examples(report, "tags") == [str(tag)]
    assert report["notes"]["kept_optouts"] == 1  # the APSIS opt-out: not drift
    assert "Changed in APSIS" not in json.dumps(report) and f"p{missing}@example.com" not in json.dumps(report)
    assert any("no endpoint that lists" in text for text in report["limitations"])

    # ---- --fix: through the real-time queue and the worker ---------------------------------------------------
    calls_before = stack.apsis_calls()
    fixed = _reconcile(stack, iid, key, "--fix")["fix"]
    assert fixed["enqueued"] == 6 and fixed["not_fixed"] == {}

    def repaired() -> dict[str, Any] | None:
        again = _reconcile(stack, iid, key)
        return again if again["total_drift"] == 0 else None

    again = wait_for("a reconcile without drift", repaired, timeout=90, interval=1.0)
    assert again["persons_checked"] == 6 and again["notes"]["kept_optouts"] == 1
    assert stack.profile(deleted) is None  # on_delete: delete, after Efficy proved the person gone
    assert "newsletter-readers" not in stack.profile(lost)["tags"]  # on_condition_lost: untag
    assert stack.profile(attribute)["attributes"][FIRSTNAME] == f"First{attribute}"
    assert _consent(stack, consent, SMS) == "opt-out"
    assert "newsletter-readers" in stack.profile(tag)["tags"]
    assert _consent(stack, missing, NEWS) == "opt-in"
    assert _consent(stack, kept, NEWS) == "opt-out"  # stickiness: the fix sent no opt-in over it
    calls = stack.apsis_calls()
    consent_posts = "POST /v2/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/consents"
    assert calls.get(consent_posts, 0) - calls_before.get(consent_posts, 0) == 2  # missing's opt-in, consent's opt-out
