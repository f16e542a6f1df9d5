"""Issue 2's vertical slice through the local stack, driven as an outside script would."""

from __future__ import annotations

import json

from tests.support import Stack, person, sign, wait_for


def test_person_edited_in_efficy_arrives_in_apsis(stack: Stack, key: int) -> None:
    stack.seed([person(key, FIRSTNAME="Ada")])
    stack.edit(key, FIRSTNAME="Grace")  # the simulator sends the signed, batched webhook

    profile = wait_for("the profile in APSIS One", lambda: stack.profile(key))
    attributes = profile["attributes"]
    assert attributes["com.apsis1.attributes.email"] == f"p{key}@example.com"
    assert attributes["com.apsis1.attributes.crmid"] == str(key)
    wait_for(
        "the new first name",
        lambda: (stack.profile(key) or {}).get("attributes", {}).get("com.apsis1.attributes.firstname") == "Grace",
    )


def test_signed_webhook_is_accepted_with_202(stack: Stack, key: int) -> None:
    stack.seed([person(key)])
    response = stack.signed_webhook(
        [{"table": 11000, "key": key, "operation": "Update", "fields": {"NAME": "x"}, "date": "2026-01-01T00:00:00Z"}]
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    wait_for("the profile in APSIS One", lambda: stack.profile(key))


def test_wrong_signature_is_401_and_nothing_is_enqueued(stack: Stack, key: int) -> None:
    stack.idle()
    body = json.dumps(
        {"records": [{"table": 11000, "key": key, "operation": "Update", "fields": {}, "date": "2026-01-01T00:00:00Z"}]}
    ).encode()
    headers = sign("not-the-secret", body)
    response = stack.post_webhook(body, headers)
    assert response.status_code == 401
    assert "signature" in response.json()["error"].lower()
    assert stack.queue_depth("ContactChangesQueue") == 0
    assert stack.profile(key) is None
