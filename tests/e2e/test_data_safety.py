"""Issue 11 (data safety) on the local stack: no Efficy error text or malformed answer deletes or untags a profile,
an APSIS One that refuses our credentials acknowledges nothing, and the write-back honours the integration's
Efficy error codes. Driven through the signed webhook, the simulators' fault API, the queues and the CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support import ROOT, Stack, person, unique_key, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]
FIRSTNAME = "com.apsis1.attributes.firstname"
NEWS = "usercreated.topics.newsletter-ab12"


def _state(stack: Stack, integration_id: str, key: int) -> dict[str, Any]:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.names["StateTable"],
            Key={"pk": {"S": f"PERSON#{integration_id}#{key}"}, "sk": {"S": "STATE"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return json.loads(item["doc"]["S"]) if item else {}


def _webhook(stack: Stack, integration_id: str, key: int, operation: str, date: str) -> None:
    record = {"table": 11000, "key": key, "operation": operation, "fields": {}, "date": date}
    assert stack.signed_webhook([record], integration_id=integration_id).status_code == 202


def _firstname(stack: Stack, key: int) -> str | None:
    return ((stack.profile(key) or {}).get("attributes") or {}).get(FIRSTNAME)


def _synced(stack: Stack, integration_id: str, key: int) -> None:
    stack.seed([person(key)])
    _webhook(stack, integration_id, key, "Create", "2026-04-01T10:00:00Z")
    wait_for("the profile with its tag", lambda: "newsletter-readers" in (stack.profile(key) or {}).get("tags", []))


def _consult_answer(key: int, master_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A JSON-RPC consult answer for `key` whose master dataset holds `master_rows`."""
    dataset = {"#class": "dataset", "#data": master_rows}
    return [
        {
            "#id": f"consult-{key}",
            "@name": "consult",
            "@func": [
                {"@name": "master", "#result": dataset},
                {"@name": "detail", "#result": {"#class": "dataset", "#data": []}},
            ],
        }
    ]


ANSWERS = {
    # an Efficy error without a code whose text merely sounds like "not found"
    "error_text": lambda key: [{"#error": {"errorstring": "Field LANGUAGE does not exist"}}],
    # a record without the fields the sync conditions read (it would fail OPENED = "1")
    "record_without_condition_fields": lambda key: _consult_answer(key, [{"K_CONTACT": key}]),
    # an empty record for a person the records export still lists
    "empty_record": lambda key: _consult_answer(key, []),
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
@pytest.mark.parametrize("on_delete", ["delete", "untag"])
def test_no_efficy_error_text_or_malformed_answer_deletes_or_untags(
    stack: Stack, key: int, tmp_path: Path, answer: str, on_delete: str
) -> None:
    iid = stack.create_integration(tmp_path, on_delete=on_delete, on_condition_lost=on_delete)
    _synced(stack, iid, key)
    # One bad answer to the worker's refetch; Efficy still has the person, and the CRM user changed them.
    stack.fault(
        "efficy",
        path_regex="^/crm/json",
        status=200,
        count=1,
        body=json.dumps(ANSWERS[answer](key)),
        content_type="application/json",
    )
    stack.seed([person(key, FIRSTNAME="StillHere")])
    _webhook(stack, iid, key, "Update", "2026-04-01T11:00:00Z")

    # The bad answer is an error: the message comes back and the next refetch brings the change in.
    wait_for("the change after the bad answer", lambda: _firstname(stack, key) == "StillHere", timeout=60)
    profile = stack.profile(key)
    assert profile is not None and "newsletter-readers" in profile["tags"]
    assert _state(stack, iid, key).get("last_outcome") == "synced"


def test_a_confirmed_delete_still_deletes(stack: Stack, key: int, tmp_path: Path) -> None:
    """Positive evidence still works: gone from the JSON-RPC read and from the records export."""
    iid = stack.create_integration(tmp_path, on_delete="delete")
    _synced(stack, iid, key)
    stack.http.delete(f"{stack.efficy_url}/_sim/persons/{key}", timeout=10).raise_for_status()
    calls_before = stack.efficy_calls().get("GET /v1/records/{entity}", 0)
    _webhook(stack, iid, key, "Delete", "2026-04-01T11:00:00Z")
    wait_for("the tombstone", lambda: _state(stack, iid, key).get("last_outcome") == "deleted")
    assert stack.profile(key) is None
    assert stack.efficy_calls().get("GET /v1/records/{entity}", 0) > calls_before  # the confirming read


# ---- APSIS One refusing our credentials (11.4) ------------------------------------------------------------------
def test_apsis_refusing_every_call_acknowledges_nothing_and_redrive_brings_every_change_in(
    stack: Stack, tmp_path: Path
) -> None:
    keys = [unique_key() for _ in range(3)]
    iid = stack.create_integration(tmp_path)
    for key in keys:
        _synced(stack, iid, key)
    wait_for("the contact queue drained", lambda: stack.queue_depth("ContactChangesQueue") == 0, timeout=60)
    dead_before = stack.queue_depth("ContactChangesDLQ")

    # APSIS answers 403 to every call, the token request included, until the credentials are fixed.
    stack.fault("apsis", path_regex=".", status=403, count=1_000_000, body='{"title": "Forbidden"}')
    for key in keys:
        stack.seed([person(key, FIRSTNAME=f"During{key}")])
        _webhook(stack, iid, key, "Update", "2026-04-02T10:00:00Z")

    wait_for(
        "every refused change in the DLQ",
        lambda: stack.queue_depth("ContactChangesDLQ") >= dead_before + len(keys),
        timeout=120,
        interval=0.5,
    )
    assert stack.queue_depth("ContactChangesQueue") == 0
    for key in keys:
        state = _state(stack, iid, key)
        assert state.get("last_outcome") == "synced", state  # never recorded as a final failure
        assert state.get("error_category") in (None, ""), state
        assert _firstname(stack, key) == f"First{key}"

    stack.clear_faults()  # the credentials are fixed
    stack.cli("dlq", "redrive", "--queue", "contact", check=True)
    wait_for(
        "every change made while APSIS refused us",
        lambda: all(_firstname(stack, key) == f"During{key}" for key in keys),
        timeout=90,
        interval=0.5,
    )
    assert stack.queue_depth("ContactChangesDLQ") == 0


# ---- the write-back and the integration's Efficy error codes (11.7) ---------------------------------------------
def test_the_write_back_honours_the_configured_not_found_code(stack: Stack, key: int, tmp_path: Path) -> None:
    """This Efficy says GONE for a deleted contact: the opt-out of a deleted person is recorded and done,
    not retried for ever because the write-back's own client knew only the default code."""
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    efficy = {**demo["efficy"], "base_url": f"{stack.efficy_url}/crm", "error_codes": {"not_found": ["GONE"]}}
    iid = stack.create_integration(tmp_path, efficy=efficy)
    stack.seed([person(key)])
    stack.http.delete(f"{stack.efficy_url}/_sim/persons/{key}", timeout=10).raise_for_status()
    wait_for("the contact queue drained", lambda: stack.queue_depth("ContactChangesQueue") == 0, timeout=60)
    dead_before = stack.queue_depth("OptOutDLQ")
    gone = [{"@name": "exception", "#error": {"errorcode": "GONE", "errorstring": "Cont record is gone"}}]
    stack.fault(
        "efficy",
        path_regex="^/crm/json",
        status=200,
        count=1_000_000,
        body=json.dumps(gone),
        content_type="application/json",
    )

    body = {
        "event": "email.unsubscribe",
        "profile_key": str(key),
        "topic_discriminator": NEWS,
        "channel_discriminator": "com.apsis1.channels.email",
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    response = requests.post(
        f"{stack.api_url}/integrations/{iid}/apsis/optout",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Apsis-Webhook-Token": stack.demo["optout_token"]},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    # Done, not retried until it is dead-lettered (the local stack redelivers a failed opt-out after 1 s).
    wait_for("the opt-out handled", lambda: stack.queue_depth("OptOutQueue") == 0, timeout=60)
    assert stack.queue_depth("OptOutDLQ") == dead_before
    item = stack.client("dynamodb").get_item(
        TableName=stack.names["StateTable"],
        Key={"pk": {"S": f"PERSON#{iid}#{key}"}, "sk": {"S": "OPTOUTS"}},
        ConsistentRead=True,
    )
    assert "Item" in item


# ---- a CRM opt-out reaches APSIS One even when the person fails the sync conditions -------------------------


def _consents(stack: Stack, key: int) -> dict[str, str]:
    return {c["topic"]: c["type"] for c in (stack.profile(key) or {}).get("consents", [])}


@pytest.mark.parametrize("edits", [1, 2], ids=["one-edit", "robinson-then-leave"])
def test_a_person_failing_the_conditions_who_leaves_the_newsletter_is_opted_out(
    stack: Stack, key: int, edits: int
) -> None:
    """A synced person is Robinson-listed (fails the demo's conditions; `on_condition_lost: leave`) and leaves CRM
    profile 12, in one edit or two. Skipped, they were left opted in to the newsletter in APSIS One for as long
    as they failed the conditions; leaving the profile is a CRM opt-out, and an opt-out creates nobody."""
    stack.seed([person(key, profiles=[12])])
    stack.edit(key, FIRSTNAME="Ada")
    wait_for("the opt-in", lambda: _consents(stack, key) == {NEWS: "opt-in"}, timeout=60)
    if edits == 2:
        stack.edit(key, ROBINSON="1")
        wait_for("skipped", lambda: stack.stored_state(key).get("last_outcome") == "skipped", timeout=60)
        assert _consents(stack, key) == {NEWS: "opt-in"}  # still in the profile: nothing to withdraw
        stack.edit(key, profiles=[])
    else:
        stack.edit(key, ROBINSON="1", profiles=[])
    wait_for("the opt-out", lambda: _consents(stack, key) == {NEWS: "opt-out"}, timeout=60)
    # the worker stores the person's state after APSIS answered: wait for it too, rather than read in between
    wait_for("the stored opt-out", lambda: stack.stored_state(key)["consents"] == {f"{NEWS}|email": "opt-out"}, 30)
    stored = stack.stored_state(key)
    assert stored["last_outcome"] == "skipped", stored


def test_one_409_to_a_crm_opt_out_is_retried_until_it_lands(stack: Stack, key: int) -> None:
    """APSIS answers 409 once to the opt-out's consent POST while the profile holds the opt-in (a transition it
    supports): acknowledged as the person's failure, the opt-out waited for their next change; retried, it lands."""
    stack.seed([person(key, profiles=[12])])
    stack.edit(key, FIRSTNAME="Ada")
    wait_for("the opt-in", lambda: _consents(stack, key) == {NEWS: "opt-in"}, timeout=60)
    problem = json.dumps({"type": "about:blank", "title": "Conflict", "status": 409, "detail": "concurrent update"})
    stack.fault(
        "apsis",
        path_regex=rf"/profiles/{key}/.*consents$",
        method="POST",
        status=409,
        count=1,
        body=problem,
        content_type="application/problem+json",
    )
    stack.edit(key, profiles=[])  # the CRM opt-out
    wait_for("the opt-out", lambda: _consents(stack, key) == {NEWS: "opt-out"}, timeout=90)
    # stored after APSIS answered (after a 409, as "unknown" until the retry's write): read it once written
    wait_for("the stored opt-out", lambda: stack.stored_state(key)["consents"] == {f"{NEWS}|email": "opt-out"}, 30)
