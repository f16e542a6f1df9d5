"""Run history (issue 14.5) and the webhook registration help (issue 16.5), run as a user runs them.

On the stack a user starts as the README says (`local up --ready-file`; `user` in tests/conftest.py), the CLI
runs as a subprocess with ONLY the README's environment (as in test_as_documented.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.support import wait_for
from tests.user_stack import UserStack, seed

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240), pytest.mark.xdist_group("user_stack")]


# ---- 14.5: run history ---------------------------------------------------------------------------------------


def test_three_full_syncs_one_cancelled_are_listed_newest_first_and_a_report_reprints(
    user: UserStack,
    tmp_path: Path,
) -> None:
    seed(user, 20, "--no-webhooks")
    integration_id = user.own_integration(tmp_path, full_sync={"write_mode": "diff", "page_size": 10})
    assert "No full sync" in user.cli("full-sync", "list", integration_id).stdout

    # 1. started with the CLI, followed to the end
    user.cli("full-sync", "start", integration_id, "--follow", timeout=180)
    first = user.json("full-sync", "status", integration_id)
    assert first["status"] == "succeeded"

    # 2. started directly on Step Functions, as the README shows for the AWS CLI
    sfn = user.aws("stepfunctions")
    name = f"{integration_id}-{int(time.time())}"
    arn = sfn.start_execution(
        stateMachineArn=user.outputs()["FullSyncStateMachineArn"],
        name=name,
        input=json.dumps({"integration_id": integration_id, "dry_run": False}),
    )["executionArn"]
    wait_for("the direct execution to end", lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING")
    wait_for(
        "its run to end",
        lambda: (
            (s := user.json("full-sync", "status", integration_id))["run_id"] != first["run_id"]
            and s["status"] == "succeeded"
        ),
    )

    # 3. started with the CLI and cancelled while it runs (Efficy answers slowly: persons unchanged since the
    #    first runs cost no APSIS call, so only Efficy's reads take time)
    efficy = user.ready["efficy_url"]
    slow = {"path_regex": r"/v1/records/", "method": "GET", "delay_ms": 300}
    user.http.post(f"{efficy}/_sim/faults", json=slow, timeout=10).raise_for_status()
    try:
        user.json("full-sync", "start", integration_id)
        wait_for(
            "the third run to begin",
            lambda: (
                (s := user.json("full-sync", "status", integration_id))["status"] == "running"
                and s["run_id"] != first["run_id"]
            ),
            timeout=60,
        )
        user.cli("full-sync", "cancel", integration_id)
    finally:
        user.http.delete(f"{efficy}/_sim/faults", timeout=10)

    listed = user.json("full-sync", "list", integration_id)
    runs = listed["runs"]
    assert [r["status"] for r in runs] == ["cancelled", "succeeded", "succeeded"], runs
    assert runs[2]["run_id"] == first["run_id"]
    started = [r["started_at"] for r in runs]
    assert started == sorted(started, reverse=True)
    # who started each one: the CLI records the caller's AWS identity (STS), a direct start its execution's name
    caller = user.aws("sts").get_caller_identity()["Arn"]
    assert [(r["started_via"], r["started_by"]) for r in runs] == [
        ("cli", caller),
        ("stepfunctions", name),
        ("cli", caller),
    ]
    assert all(r["config_version"] == 1 and r["ended_at"] for r in runs)
    assert runs[1]["counts"]["persons"] >= 20 and runs[2]["counts"]["persons"] >= 20

    text = user.cli("full-sync", "list", integration_id).stdout.splitlines()
    rows = [line for line in text if line.startswith("2")]  # run ids start with the start time
    assert [row.split()[0] for row in rows] == [r["run_id"] for r in runs]
    assert [row.split()[1] for row in rows] == ["CANCELLED", "SUCCEEDED", "SUCCEEDED"]
    assert f"stepfunctions ({name})" in rows[1]

    # `report ID RUN` re-prints the report of an older run, the same report `status` printed when it ended
    report = user.cli("full-sync", "report", integration_id, first["run_id"]).stdout
    assert f"Full sync of {integration_id} (run {first['run_id']}): SUCCEEDED" in report
    assert f"started by {caller} with efficy-sync" in report and "config version 1" in report
    as_json = user.json("full-sync", "report", integration_id, first["run_id"])
    assert as_json["report"]["run_id"] == first["run_id"] and as_json["report"]["status"] == "succeeded"
    cancelled = user.cli("full-sync", "report", integration_id, runs[0]["run_id"], expect=1).stdout
    assert "CANCELLED" in cancelled
    missing = user.cli("full-sync", "report", integration_id, "20000101T000000Z-nope", expect=1)
    assert "no run '20000101T000000Z-nope'" in missing.stderr


# ---- 16.5: what to register in Efficy -------------------------------------------------------------------------


def _records(key: int) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json.dumps(
        {"database": "sim", "records": [{"table": 11000, "key": key, "operation": "Update", "date": now}]}
    ).encode()


def _with_auth(user: UserStack, tmp_path: Path, **auth: str) -> str:
    shown = yaml.safe_load(user.cli("config", "show", "demo").stdout)
    integration_id = f"reg-{uuid.uuid4().hex[:8]}"
    shown["integration_id"] = integration_id
    shown["efficy"]["auth"] = auth
    path = tmp_path / f"{integration_id}.yaml"
    path.write_text(yaml.safe_dump(shown, sort_keys=False))
    user.cli("config", "apply", str(path))
    return integration_id


def test_webhook_url_in_url_token_mode_is_the_url_efficy_calls(user: UserStack, tmp_path: Path) -> None:
    integration_id = _with_auth(user, tmp_path, mode="url_token")
    secret = user.ready["demo"]["webhook_secret"]
    api_url = user.outputs()["ApiUrl"]
    url = f"{api_url}/integrations/{integration_id}/efficy/webhook?token={secret}"

    shown = user.cli("config", "show", integration_id, "--webhook-url")
    assert f"POST {url}" in shown.stdout and "no header" in shown.stdout
    assert "shows the webhook secret" in shown.stderr
    doc = user.json("config", "show", integration_id, "--webhook-url")
    assert doc["mode"] == "url_token" and doc["url"] == url and doc["headers"] == {}

    # what it printed is what works: a POST to that URL, no header, is accepted; without the token it is not
    first, _ = seed(user, 1, "--no-webhooks")
    accepted = user.http.post(doc["url"], data=_records(first), headers={"Content-Type": "application/json"})
    assert accepted.status_code == 202, accepted.text
    bare = user.http.post(doc["url"].split("?")[0], data=_records(first), timeout=30)
    assert bare.status_code == 401


def test_webhook_url_in_hmac_body_mode_names_the_header_and_the_secret(user: UserStack, tmp_path: Path) -> None:
    integration_id = _with_auth(user, tmp_path, mode="hmac_body")
    secret = user.ready["demo"]["webhook_secret"]
    url = f"{user.outputs()['ApiUrl']}/integrations/{integration_id}/efficy/webhook"

    shown = user.cli("config", "show", integration_id, "--webhook-url").stdout
    assert f"POST {url}\n" in shown and "token=" not in shown
    assert "header X-Justin-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>" in shown
    assert f"signing secret: {secret}" in shown
    doc = user.json("config", "show", integration_id, "--webhook-url")
    assert doc["url"] == url and list(doc["headers"]) == ["X-Justin-Signature"] and doc["secret"] == secret

    # signing as printed is accepted
    first, _ = seed(user, 1, "--no-webhooks")
    body = _records(first)
    signature = "sha256=" + hmac.new(doc["secret"].encode(), body, hashlib.sha256).hexdigest()
    accepted = user.http.post(doc["url"], data=body, headers={"X-Justin-Signature": signature}, timeout=30)
    assert accepted.status_code == 202, accepted.text


# ---- 14.6: which redrive was used ------------------------------------------------------------------------------


def test_dlq_redrive_on_the_local_stack_says_it_used_the_mover_and_why(user: UserStack) -> None:
    """moto has no StartMessageMoveTask: the local stack falls back to the built-in mover, and says so."""
    first, _ = seed(user, 1, "--no-webhooks", "--profiles", "12")
    dlq = user.outputs()["ContactChangesDLQUrl"]
    change = {"integration_id": "demo", "person_key": first, "operation": "Update", "source": "webhook"}
    user.aws("sqs").send_message(
        QueueUrl=dlq, MessageBody=json.dumps(change), MessageGroupId=f"demo#{first}", MessageDeduplicationId="h1"
    )
    moved = user.json("dlq", "redrive", "--queue", "contact")["queues"]["contact"]
    assert moved["method"] == "mover" and moved["moved"] == 1
    assert "StartMessageMoveTask not available" in moved["reason"]
    assert user.json("dlq", "count")["queues"]["contact"] == 0
    text = user.cli("dlq", "redrive", "--queue", "optout").stdout
    assert "optout: moved 0 message(s)" in text and "with the built-in mover (StartMessageMoveTask not" in text
    refused = user.cli("dlq", "redrive", "--queue", "optout", "--method", "move-task", expect=1)
    assert "StartMessageMoveTask cannot be used" in refused.stderr and "`--method mover`" in refused.stderr
