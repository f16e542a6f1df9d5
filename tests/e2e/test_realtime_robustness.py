"""Real-time sync keeps its promises under repetition, quick successive changes, faults and poison messages."""

from __future__ import annotations

import json

from tests.support import Stack, person, wait_for

PATCH_ATTRS = "PATCH /v2/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/attributes"


def _firstname(stack: Stack, key: int) -> str | None:
    return ((stack.profile(key) or {}).get("attributes") or {}).get("com.apsis1.attributes.firstname")


def _outcome(stack: Stack, key: int) -> dict:
    from boto3.dynamodb.types import TypeDeserializer

    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.names["StateTable"],
            Key={"pk": {"S": f"PERSON#demo#{key}"}, "sk": {"S": "STATE"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    if not item:
        return {}
    return json.loads(TypeDeserializer().deserialize(item["doc"]))


def _settled(stack: Stack) -> bool:
    return stack.queue_depth("ContactChangesQueue") == 0


def test_repeated_and_unchanged_cost_zero_apsis_calls(stack: Stack, key: int) -> None:
    stack.seed([person(key)])
    record = {
        "table": 11000,
        "key": key,
        "operation": "Update",
        "fields": {"NAME": "x"},
        "date": "2026-02-01T10:00:00Z",
    }
    assert stack.signed_webhook([record]).status_code == 202
    wait_for("the profile", lambda: stack.profile(key))
    wait_for("the first sync to be stored", lambda: _outcome(stack, key).get("last_outcome") == "synced")
    wait_for("an idle queue", lambda: _settled(stack))
    before = stack.apsis_calls()

    # The same webhook again (Efficy retried it), then a change of the date only (nothing mapped changed).
    assert stack.signed_webhook([record]).status_code == 202
    assert stack.signed_webhook([{**record, "date": "2026-02-01T10:05:00Z"}]).status_code == 202
    wait_for("an idle queue", lambda: _settled(stack))
    after = stack.apsis_calls()
    mine = {k: after.get(k, 0) - before.get(k, 0) for k in after if "/_sim" not in k and "oauth" not in k}
    assert not any(v for k, v in mine.items() if "{key}" in k), mine


def test_two_quick_changes_end_with_the_newest(stack: Stack, key: int) -> None:
    stack.seed([person(key)])
    stack.edit(key, FIRSTNAME="First")
    stack.edit(key, FIRSTNAME="Second")
    wait_for("the newest first name", lambda: _firstname(stack, key) == "Second")
    wait_for("an idle queue", lambda: _settled(stack))
    assert _firstname(stack, key) == "Second"


def test_person_failing_a_condition_is_not_created(stack: Stack, key: int) -> None:
    stack.seed([person(key, ROBINSON="1")])
    stack.edit(key, FIRSTNAME="Robin")
    wait_for("the skip to be recorded", lambda: _outcome(stack, key).get("last_outcome") == "skipped")
    assert stack.profile(key) is None
    assert "ROBINSON" in (_outcome(stack, key).get("skip_reason") or "")


def test_apsis_503_and_429_still_end_right(stack: Stack, key: int) -> None:
    stack.seed([person(key)])
    stack.fault("apsis", path_regex="/v2/audience|/audience/keyspaces", status=503, rate=0.5, count=6)
    stack.fault("apsis", path_regex="/v2/audience", status=429, count=2, headers={"Retry-After": "0"})
    stack.edit(key, FIRSTNAME="Faulty")
    # Attributes are written before consents, so the new first name alone does not mean the person is done:
    # wait for the stored outcome, which is written only once every APSIS call of the change has succeeded.
    wait_for(
        "the profile and its stored outcome despite faults",
        lambda: _firstname(stack, key) == "Faulty" and _outcome(stack, key).get("last_outcome") == "synced",
        timeout=60,
    )
    consents = stack.profile(key)["consents"]
    assert {"topic": "usercreated.topics.newsletter-ab12", "channel": "email", "type": "opt-in"} in [
        {k: c[k] for k in ("topic", "channel", "type")} for c in consents
    ]


def test_efficy_504_html_still_ends_right(stack: Stack, key: int) -> None:
    stack.seed([person(key)])
    stack.fault(
        "efficy",
        path_regex="^/crm/json",
        status=504,
        count=5,
        body="<html><body>504 Gateway Time-out</body></html>",
        content_type="text/html",
    )
    stack.edit(key, FIRSTNAME="AfterOutage")
    wait_for("the profile after Efficy recovered", lambda: _firstname(stack, key) == "AfterOutage", timeout=60)


def test_poison_message_reaches_the_dlq_and_redrive_brings_it_back(stack: Stack, key: int) -> None:
    sqs = stack.client("sqs")
    stack.seed([person(key, FIRSTNAME="Redriven")])
    # An outage longer than the retries: the message is dead-lettered after maxReceiveCount receives.
    stack.fault("efficy", path_regex="^/crm/json", status=503, count=10_000)
    change = {
        "integration_id": "demo",
        "person_key": key,
        "operation": "Update",
        "date": "2026-03-01T00:00:00Z",
        "source": "webhook",
    }
    sqs.send_message(
        QueueUrl=stack.names["ContactChangesQueue"],
        MessageBody=json.dumps(change),
        MessageGroupId=f"demo#{key}",
        MessageDeduplicationId=f"poison-{key}",
    )
    wait_for("the message in the DLQ", lambda: stack.queue_depth("ContactChangesDLQ") >= 1, timeout=90)
    assert stack.profile(key) is None

    stack.clear_faults()
    result = stack.cli("dlq", "redrive", "--queue", "contact", check=True)
    assert "moved" in result.stdout
    wait_for("the redriven person in APSIS One", lambda: _firstname(stack, key) == "Redriven", timeout=60)
    assert stack.queue_depth("ContactChangesDLQ") == 0


def test_a_change_outlasting_five_receives_of_an_apsis_outage_still_lands(stack: Stack, key: int) -> None:
    """APSIS refuses the person's profile write for seven receives in a row (four tries each: the stack's three
    in-call retries). The queue dead-lettered a change after five receives, about 30 minutes of an outage on AWS;
    now each retry waits longer than the last (efficy_sync/redelivery.py) and the queue allows ten, so the
    change waits the outage out and lands, with nothing in the DLQ."""
    stack.idle()
    dead_before = stack.queue_depth("ContactChangesDLQ")
    stack.fault(
        "apsis",
        path_regex=rf"/profiles/{key}/sections/[^/]+/attributes$",
        method="PATCH",
        status=503,
        count=7 * 4,
        body=json.dumps({"title": "Service unavailable", "status": 503, "detail": "maintenance"}),
        content_type="application/problem+json",
    )
    stack.seed([person(key, FIRSTNAME="Patient")])
    stack.edit(key, FIRSTNAME="Waited")
    wait_for("the change after the outage", lambda: _firstname(stack, key) == "Waited", timeout=120)
    assert stack.queue_depth("ContactChangesDLQ") == dead_before
