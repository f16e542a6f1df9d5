"""`efficy-sync health ID` on the local stack: injected failures show by category, `--retry` clears them.

Each test runs on an integration of its own (the demo's simulators and secrets under another id), so the
report holds exactly this test's persons, whatever else the worker's shared stack has seen.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from efficy_sync_tools.commands._aws import EXIT_FOUND, EXIT_OK

from tests.support import Stack, person, wait_for

PROBLEM = "application/problem+json"


def own_integration(stack: Stack, tmp_path: Path) -> str:
    iid = f"health-{uuid.uuid4().hex[:10]}"
    cfg = yaml.safe_load(stack.cli("config", "show", "demo", "--format", "yaml", check=True).stdout)
    cfg["integration_id"] = iid
    path = tmp_path / f"{iid}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    stack.cli("config", "apply", str(path), "--by", "test_health", check=True)
    return iid


def changed(keys: list[int], name: str = "FIRSTNAME") -> list[dict[str, Any]]:
    return [
        {"table": 11000, "key": k, "operation": "Update", "fields": {name: "x"}, "date": "2026-05-01T10:00:00Z"}
        for k in keys
    ]


def outcome(stack: Stack, iid: str, key: int) -> str | None:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.names["StateTable"],
            Key={"pk": {"S": f"PERSON#{iid}#{key}"}, "sk": {"S": "STATE"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return json.loads(item["doc"]["S"]).get("last_outcome") if item else None


def health(stack: Stack, iid: str, *args: str) -> dict[str, Any]:
    """The JSON report; the exit code says whether it needs an operator (README "Exit codes": 6 for failing
    persons or dead-letter messages, 0 without)."""
    result = stack.cli("health", iid, "--format", "json", *args)
    report = json.loads(result.stdout)
    needs_operator = report["failing_persons"] or any(report["dead_letter_queues"].values())
    assert result.returncode == (EXIT_FOUND if needs_operator else EXIT_OK), result.stderr
    return report


def by_category(report: dict[str, Any]) -> dict[str, list[str]]:
    return {c["category"]: c["persons"] for c in report["categories"]}


def firstname(stack: Stack, key: int) -> str | None:
    return ((stack.profile(key) or {}).get("attributes") or {}).get("com.apsis1.attributes.firstname")


def test_failures_by_category_and_retry_once_fixed(stack: Stack, key: int, tmp_path: Path) -> None:
    iid = own_integration(stack, tmp_path)
    rejected, also_rejected, refused, fine = key + 1, key + 2, key + 3, key + 4
    keys = [rejected, also_rejected, refused, fine]
    stack.seed([person(k, FIRSTNAME=f"Health{k}") for k in keys])
    # APSIS refuses the attribute values of two persons (quoting an address, as a real 400 might) ...
    stack.fault(
        "apsis",
        method="PATCH",
        path_regex=rf"/profiles/({rejected}|{also_rejected})/sections/[^/]+/attributes$",
        status=400,
        content_type=PROBLEM,
        body=json.dumps({"title": "Bad Request", "detail": f"invalid value for p{rejected}@example.com"}),
    )
    # ... and refuses our credentials for a third one: that is about the integration, not the person, so it is
    # never recorded on them; the change is retried and dead-lettered (issue 11.4).
    stack.fault("apsis", path_regex=rf"/profiles/{refused}/", status=403, content_type=PROBLEM, body="{}")

    assert stack.signed_webhook(changed(keys), integration_id=iid).status_code == 202
    wait_for(
        "the two refused values to be recorded",
        lambda: [outcome(stack, iid, k) for k in (rejected, also_rejected, fine)] == ["failed", "failed", "synced"],
    )
    wait_for("the refused change dead-lettered", lambda: "dead_lettered" in by_category(health(stack, iid)), 90)
    assert outcome(stack, iid, refused) is None

    listed = stack.cli("health", iid)
    assert listed.returncode == EXIT_FOUND, listed.stderr
    text = listed.stdout
    assert f"rejected value [rejected_value]: 2 person(s)\n    persons: {rejected}, {also_rejected}" in text
    assert "[permission]" not in text
    assert f"efficy-sync health {iid} --retry rejected_value" in text
    assert "@example.com" not in text  # the refused value's address is masked in the error detail
    report = health(stack, iid)
    assert by_category(report) == {
        "rejected_value": [str(rejected), str(also_rejected)],
        "dead_lettered": [str(refused)],
    }
    assert report["failing_persons"] == 3 and report["persons_counted"] is False  # read from the index only
    assert "contact" in report["dead_letter_queues"]
    scanned = health(stack, iid, "--scan")  # every stored person read (and counted)
    # the refused person has no stored state: its first call (the one-call create) was refused
    assert by_category(scanned) == by_category(report) and scanned["persons"]["known"] == 3

    # The cause is fixed: retrying one category brings those persons in, and only them.
    stack.clear_faults()
    retried = health(stack, iid, "--retry", "rejected_value")
    assert retried["retried"] == {"category": "rejected_value", "persons": 2, "dlq_messages_removed": 0}
    for k in (rejected, also_rejected):
        wait_for(f"person {k} in APSIS One after the retry", lambda k=k: firstname(stack, k) == f"Health{k}")
    wait_for("the rejected values to leave the report", lambda: "rejected_value" not in by_category(health(stack, iid)))
    assert by_category(health(stack, iid)) == {"dead_lettered": [str(refused)]}
    assert firstname(stack, refused) is None

    retried = health(stack, iid, "--retry", "dead_lettered")
    assert retried["retried"] == {"category": "dead_lettered", "persons": 1, "dlq_messages_removed": 1}
    wait_for("the refused person after the retry", lambda: firstname(stack, refused) == f"Health{refused}")
    wait_for("a clean report", lambda: not by_category(health(stack, iid)))
    clean = stack.cli("health", iid)
    # 6 still if another test of this shared stack left a message in a dead-letter queue
    assert "No failures" in clean.stdout and clean.returncode in (EXIT_OK, EXIT_FOUND), clean.stderr


def test_data_problems_and_dead_letters(stack: Stack, key: int, tmp_path: Path) -> None:
    iid = own_integration(stack, tmp_path)
    bad_phone, no_email, dead, skipped = key + 1, key + 2, key + 3, key + 4
    stack.seed(
        [
            person(bad_phone, MOBILE="0470 12"),
            person(no_email, EMAIL1="", profiles=[12]),
            person(dead, FIRSTNAME="Lazarus"),
            person(skipped, ROBINSON="1"),
        ]
    )
    assert stack.signed_webhook(changed([bad_phone, no_email, skipped]), integration_id=iid).status_code == 202
    wait_for(
        "the persons to be synced or skipped",
        lambda: [outcome(stack, iid, k) for k in (bad_phone, no_email, skipped)] == ["synced", "synced", "skipped"],
    )
    # A change whose retries ran out while Efficy was down (as the queue's redrive policy leaves it).
    change = {"integration_id": iid, "person_key": dead, "operation": "Update", "date": "2026-05-01T10:00:00Z"}
    stack.client("sqs").send_message(
        QueueUrl=stack.names["ContactChangesDLQ"],
        MessageBody=json.dumps(change),
        MessageGroupId=f"{iid}#{dead}",
        MessageDeduplicationId=f"dead-{iid}-{dead}",
    )

    assert by_category(health(stack, iid)) == {"dead_lettered": [str(dead)]}  # skipped persons on request only
    report = health(stack, iid, "--skipped")
    assert by_category(report) == {"dead_lettered": [str(dead)], "conditions": [str(skipped)]}
    assert report["data_checked"] is False
    assert report["dead_letter_queues"]["contact"] >= 1
    conditions = next(c for c in report["categories"] if c["category"] == "conditions")
    assert conditions["kind"] == "skipped" and conditions["details"] == [{"text": "ROBINSON equals '0'", "count": 1}]

    checked = health(stack, iid, "--check-data")
    assert by_category(checked) == {
        "dead_lettered": [str(dead)],
        "invalid_phone": [str(bad_phone)],
        "missing_email": [str(no_email)],
        "conditions": [str(skipped)],
    }
    checked_text = stack.cli("health", iid, "--check-data")
    assert checked_text.returncode == EXIT_FOUND, checked_text.stderr  # the dead-lettered person
    text = checked_text.stdout
    assert "invalid phone [invalid_phone]: 1 person(s)" in text
    assert "missing e-mail [missing_email]: 1 person(s)" in text
    assert "0470 12" not in text and f"p{bad_phone}@example.com" not in text

    retried = health(stack, iid, "--retry", "dead_lettered")
    assert retried["retried"] == {"category": "dead_lettered", "persons": 1, "dlq_messages_removed": 1}
    wait_for("the dead-lettered person in APSIS One", lambda: firstname(stack, dead) == "Lazarus")
    assert "dead_lettered" not in by_category(health(stack, iid))


def test_unknown_category_and_integration(stack: Stack) -> None:
    bad = stack.cli("health", "demo", "--retry", "nonsense")
    assert bad.returncode == 2  # a usage error, as the README's exit codes say (it was 1, a "no" answer)
    assert "unknown category 'nonsense' for --retry; one of: failures, rejected_value" in bad.stderr
    missing = stack.cli("health", "no-such-integration")
    assert missing.returncode == 1 and "unknown integration 'no-such-integration'" in missing.stderr
