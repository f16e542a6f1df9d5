"""Every command the README and docs/runbook.md name, run as a user runs it: on `efficy-sync local up
--ready-file F`, with ONLY the environment the README gives (PATH, HOME, AWS_ENDPOINT_URL, AWS_REGION and
dummy credentials). No table, queue or state-machine name is passed: the CLI must find them through the
stack, as it does on AWS. Where a test here needs a name a user would not have, the README or the product
is wrong.

One stack per test worker, started the way the README says (`user`: tests/conftest.py, tests/user_stack.py);
each test works on persons and integrations of its own, so the order of the tests does not matter.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml

from tests.support import ROOT, wait_for
from tests.user_stack import UserStack, seed

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240), pytest.mark.xdist_group("user_stack")]

TEMPLATE = ROOT / "template.yaml"


# ---- the stack is named as template.yaml names it ----------------------------------------------------------


def test_every_resource_and_output_keeps_the_template_name(user: UserStack) -> None:
    template = cfn_yaml.loads(TEMPLATE.read_text(), str(TEMPLATE))
    outputs = user.outputs()
    assert set(template["Outputs"]) <= set(outputs), set(template["Outputs"]) - set(outputs)
    assert outputs["ApiUrl"] == user.ready["api_url"]

    def resolved(value: Any) -> str:
        text = value["Fn::Sub"] if isinstance(value, dict) else value
        for name, default in (
            ("AWS::StackName", "efficy-sync"),
            ("IntegrationId", "demo"),
            ("SecretsPrefix", "efficy-sync"),
        ):
            text = text.replace("${" + name + "}", default)
        return text

    named = {
        "QueueName": "AWS::SQS::Queue",
        "Name": "AWS::Serverless::StateMachine",
        "LogGroupName": "AWS::Logs::LogGroup",
        "TopicName": "AWS::SNS::Topic",
    }
    resources = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
        for r in user.aws("cloudformation").describe_stack_resources(StackName="efficy-sync")["StackResources"]
    }
    checked = 0
    for logical_id, resource in template["Resources"].items():
        for prop, kind in named.items():
            if resource["Type"] == kind and prop in resource.get("Properties", {}):
                want = resolved(resource["Properties"][prop])
                if "${" in want:
                    continue  # named after another resource's generated name (a function's log group)
                physical = resources[logical_id]  # a queue's URL, a state machine's or topic's ARN, a log group's name
                if prop == "QueueName":
                    physical = physical.rsplit("/", 1)[-1]
                elif physical.startswith("arn:"):
                    physical = physical.rsplit(":", 1)[-1]
                assert physical == want, logical_id
                checked += 1
    assert checked >= 3  # two queues and the state machine
    assert outputs["FullSyncStateMachineArn"].endswith(":stateMachine:efficy-sync-full-sync")
    machines = user.aws("stepfunctions").list_state_machines()["stateMachines"]
    assert outputs["FullSyncStateMachineArn"] in {m["stateMachineArn"] for m in machines}
    # The secrets the template creates for its first integration exist under the template's names.
    secrets = {s["Name"] for s in user.aws("secretsmanager").list_secrets()["SecretList"]}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::SecretsManager::Secret":
            assert resolved(resource["Properties"]["Name"]) in secrets


def test_version_and_exit_codes(user: UserStack) -> None:
    shown = user.cli("--version")
    assert shown.stdout.startswith("efficy-sync ") and shown.stdout.split()[1][0].isdigit()
    usage = user.cli("full-sync", "start", expect=2)  # argparse's usage error
    assert "usage:" in usage.stderr
    unknown = user.cli("full-sync", "status", "no-such-integration", expect=1)
    assert "unknown integration 'no-such-integration'" in unknown.stderr and "demo" in unknown.stderr
    help_text = user.cli("--help").stdout
    assert "3 refused" in help_text and "2 usage error" in help_text


# ---- config -------------------------------------------------------------------------------------------------


def test_config_validate_apply_show_list_history(user: UserStack, tmp_path: Path) -> None:
    shown = user.cli("config", "show", "demo").stdout
    assert "EMAIL1 -> com.apsis1.attributes.email" in shown
    assert "K_CONTACT -> the profile key in keyspace com.apsis1.keyspaces.crm-id" in shown
    data = yaml.safe_load(shown)
    integration_id = f"doc-{uuid.uuid4().hex[:8]}"
    data["integration_id"] = integration_id
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    assert "references not checked" in user.cli("config", "validate", str(path)).stdout
    online = user.json("config", "validate", str(path), "--online")
    assert online["valid"] and online["references_checked"] > 0

    applied = user.cli("config", "apply", str(path))
    assert f"applied {integration_id} version 1" in applied.stdout
    assert f"efficy-sync full-sync start {integration_id} --follow" in applied.stdout  # a new one needs a load
    assert "config validate" in applied.stderr and "--online" in applied.stderr

    data["field_mappings"] = [m for m in data["field_mappings"] if m["efficy"] != "LANGUAGE"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = user.json("config", "apply", str(path))
    assert changed["stored"] and changed["version"] == 2 and changed["full_sync_needed"]
    assert changed["full_sync_command"] == f"efficy-sync full-sync start {integration_id} --follow"

    data["on_delete"] = "untag" if data.get("on_delete") != "untag" else "ignore"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    quiet = user.cli("config", "apply", str(path))
    assert "full sync" not in quiet.stdout  # on_delete is not a mapping: nothing to resync

    listed = {i["integration_id"]: i for i in user.json("config", "list")["integrations"]}
    assert listed[integration_id]["version"] == 3 and "demo" in listed
    assert integration_id in user.cli("config", "list").stdout
    history = user.json("config", "history", integration_id)
    assert [v["version"] for v in history] == [1, 2, 3]
    # show -> edit -> apply pins no default: the version holds what the file sets (a later default still
    # reaches the integration, and an older stack still reads it); --effective lists the defaults to read
    assert yaml.safe_load(user.cli("config", "show", integration_id).stdout) == data
    effective = json.loads(user.cli("config", "show", integration_id, "--effective").stdout)
    assert "optout_max_age_hours" not in data["apsis"] and effective["apsis"]["optout_max_age_hours"] == 24
    # the same in YAML when asked for by name; `--output json` keeps `config show` JSON (what apply takes back)
    as_yaml = user.cli("config", "show", integration_id, "--effective", "--format", "yaml").stdout
    assert yaml.safe_load(as_yaml) == effective and not as_yaml.lstrip().startswith("{")
    assert user.json("config", "show", integration_id) == data


def test_config_apply_names_a_secret_that_does_not_exist(user: UserStack, tmp_path: Path) -> None:
    data = yaml.safe_load(user.cli("config", "show", "demo").stdout)
    integration_id = f"doc-{uuid.uuid4().hex[:8]}"
    data["integration_id"] = integration_id
    data["apsis"]["credentials_secret"] = f"efficy-sync/{integration_id}/apsis"
    path = tmp_path / "nosecret.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = user.cli("config", "apply", str(path), expect=1)
    assert f"apsis.credentials_secret: secret 'efficy-sync/{integration_id}/apsis' not found" in refused.stderr
    assert "nothing stored" in refused.stderr
    assert integration_id not in {i["integration_id"] for i in user.json("config", "list")["integrations"]}


def test_config_apply_checks_secret_names_against_the_stack_s_prefix(user: UserStack, tmp_path: Path) -> None:
    """The functions may read only <SecretsPrefix>/<integration>/<kind> (template.yaml): apply reads the prefix
    from the stack, so a name under another stack's prefix is refused before it is stored."""
    assert user.outputs()["SecretsPrefix"] == "efficy-sync"
    data = yaml.safe_load(user.cli("config", "show", "demo").stdout)
    integration_id = f"doc-{uuid.uuid4().hex[:8]}"
    data["integration_id"] = integration_id
    data["apsis"]["credentials_secret"] = f"efficy-sync-prod/{integration_id}/apsis"
    path = tmp_path / "prod-secret.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = user.cli("config", "apply", str(path), expect=1)
    assert "apsis.credentials_secret" in refused.stderr and "efficy-sync/<integration>/apsis" in refused.stderr
    assert "nothing stored" in refused.stderr


# ---- full sync ---------------------------------------------------------------------------------------------


def test_full_sync_start_follow_and_status_json(user: UserStack, tmp_path: Path) -> None:
    first, _ = seed(user, 12, "--no-webhooks")
    integration_id = user.own_integration(tmp_path)
    followed = user.cli("full-sync", "start", integration_id, "--follow", timeout=180)
    assert "SUCCEEDED" in followed.stdout
    status = user.json("full-sync", "status", integration_id)
    assert status["status"] == "succeeded" and status["integration_id"] == integration_id
    assert status["counters"]["persons"] >= 12
    # global options go before the command too, as the AWS CLI takes them
    again = json.loads(user.cli("--output", "json", "full-sync", "status", integration_id).stdout)
    assert again["run_id"] == status["run_id"]
    assert user.profile(first + 1) is not None or user.profile(first) is not None


def test_a_run_started_in_import_mode_overrides_the_configs_write_mode(user: UserStack, tmp_path: Path) -> None:
    """README: a big first load in import mode without a new config version: `--write-mode import` is this run's
    mode only; the next run is the config's again."""
    first, _ = seed(user, 8, "--no-webhooks")
    integration_id = user.own_integration(tmp_path, full_sync={"write_mode": "diff"})
    apsis = user.ready["apsis_url"]
    imports = "POST /v2/audience/sections/{section}/imports"
    before = user.http.get(f"{apsis}/_sim/calls", timeout=10).json().get(imports, 0)
    followed = user.cli("full-sync", "start", integration_id, "--write-mode", "import", "--follow", timeout=180)
    assert "full sync in import mode" in followed.stdout and "SUCCEEDED" in followed.stdout, followed.stdout
    assert "config version 1 in import mode" in followed.stdout  # the report says how the run wrote
    assert user.http.get(f"{apsis}/_sim/calls", timeout=10).json().get(imports, 0) > before
    assert user.profile(first) is not None or user.profile(first + 1) is not None
    user.cli("full-sync", "start", integration_id, "--follow", timeout=180)
    runs = user.json("full-sync", "list", integration_id)
    assert [run["write_mode"] for run in runs["runs"][:2]] == ["diff", "import"], runs
    refused = user.cli("full-sync", "start", integration_id, "--write-mode", "fast", expect=2)
    assert "--write-mode" in refused.stderr and "'import'" in refused.stderr


def test_dry_run_progress_says_would(user: UserStack, tmp_path: Path) -> None:
    seed(user, 5, "--no-webhooks")
    integration_id = user.own_integration(tmp_path)
    followed = user.cli("full-sync", "start", integration_id, "--dry-run", "--follow", timeout=180)
    progress = [line for line in followed.stdout.splitlines() if "persons:" in line and "skipped ·" in line]
    assert progress and all("would create" in line for line in progress), followed.stdout
    assert not any(" created," in line for line in progress)


def test_cancel_returns_once_the_run_has_ended_and_status_agrees(user: UserStack, tmp_path: Path) -> None:
    seed(user, 30, "--no-webhooks")
    integration_id = user.own_integration(tmp_path, full_sync={"write_mode": "diff", "page_size": 10})
    apsis = user.ready["apsis_url"]
    # slow the creates (two-call POST or one-call v1 PATCH) so the cancel lands while pages run: a page syncs 16
    # persons at once, so only a long delay keeps 30 persons busy past the CLI's own start-up
    slow = {
        "path_regex": r"(/sections/[^/]+/profiles|^/audience/keyspaces/[^/]+/profiles/[^/]+/sections/[^/]+/attributes)$",
        "delay_ms": 5000,
    }
    user.http.post(f"{apsis}/_sim/faults", json=slow, timeout=10).raise_for_status()
    try:
        started = user.json("full-sync", "start", integration_id)
        assert started["execution_arn"].startswith(
            user.outputs()["FullSyncStateMachineArn"].replace(":stateMachine:", ":execution:")
        )
        # the run id `status --run` and `report` take (not the execution's name); a run asked for that does
        # not exist is an error on stderr, not a line on stdout
        assert (
            user.json("full-sync", "status", integration_id, "--run", started["run_id"])["run_id"] == started["run_id"]
        )
        missing = user.cli("full-sync", "status", integration_id, "--run", "bogus", expect=1)
        assert missing.stdout == "" and "no run 'bogus'" in missing.stderr
        wait_for(
            "the run to plan its pages",
            lambda: user.json("full-sync", "status", integration_id).get("pages_total"),
            timeout=60,
        )
        cancelled = user.cli("full-sync", "cancel", integration_id)
        assert f"Full sync of {integration_id} cancelled" in cancelled.stdout, cancelled.stdout
        status = user.json("full-sync", "status", integration_id, expect=1)
        assert status["status"] == "cancelled"
        # moto's interpreter marks the execution ABORTED between states (AWS does at once); the run did not wait
        sfn = user.aws("stepfunctions")
        wait_for(
            "the execution to show ABORTED",
            lambda: sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "ABORTED",
            timeout=60,
        )
        # real-time sync of the integration is free again: a new start is not refused
        nothing = user.cli("full-sync", "cancel", integration_id, expect=1)
        assert "nothing to cancel" in nothing.stdout
    finally:
        user.http.delete(f"{apsis}/_sim/faults", timeout=10)


def test_direct_start_with_the_readme_input_and_a_bad_input(user: UserStack) -> None:
    """README, "Full sync": aws stepfunctions start-execution --state-machine-arn <FullSyncStateMachineArn>
    --name acme-eu-$(date +%s) --input '{"integration_id": "acme-eu", "dry_run": false}'."""
    sfn = user.aws("stepfunctions")
    arn = user.outputs()["FullSyncStateMachineArn"]
    good = sfn.start_execution(
        stateMachineArn=arn,
        name=f"demo-{int(time.time())}-{uuid.uuid4().hex[:4]}",
        input=json.dumps({"integration_id": "demo", "dry_run": True}),
    )["executionArn"]
    ended = wait_for(
        "the execution to end",
        lambda: (d := sfn.describe_execution(executionArn=good))["status"] != "RUNNING" and d,
        timeout=120,
    )
    assert ended["status"] == "SUCCEEDED", ended
    for bad in ({}, {"integrationId": "demo"}):
        execution = sfn.start_execution(stateMachineArn=arn, name=f"bad-{uuid.uuid4().hex[:8]}", input=json.dumps(bad))[
            "executionArn"
        ]
        failed = wait_for(
            "the execution to fail",
            lambda ex=execution: (d := sfn.describe_execution(executionArn=ex))["status"] != "RUNNING" and d,
            timeout=60,
        )
        assert failed["status"] == "FAILED"
        assert failed["error"] == "InvalidSyncInput", failed
        assert "integration_id" in failed["cause"] and "KeyError" not in failed["cause"]


# ---- one person, health, dead letters ------------------------------------------------------------------------


def test_seed_explain_and_health(user: UserStack) -> None:
    first, last = seed(user, 6)
    synced = next(k for k in range(first, last + 1) if k % 7 and k % 5)  # OPENED=1, ROBINSON=0
    wait_for(f"person {synced} in APSIS One", lambda: user.profile(synced), timeout=60)
    assert "PERSON_KEY must be" in user.cli("explain", "demo", "abc", expect=2).stderr  # a usage error
    explained = user.cli("explain", "demo", str(synced))
    assert f"person {synced}" in explained.stdout
    assert user.json("explain", "demo", str(synced))["person_key"] == str(synced)
    # README "Exit codes": health exits 6 when it found failing persons or dead-letter messages, 0 otherwise
    health = user.json("health", "demo", expect=None)
    assert "categories" in health
    shown = user.cli("health", "demo", expect=None)
    assert "demo" in shown.stdout and shown.returncode in (0, 6)
    # docs/runbook.md: --check-data, --retry CATEGORY / failures
    assert user.json("health", "demo", "--check-data", expect=None)["data_checked"] is True
    retried = user.cli("health", "demo", "--retry", "failures", expect=None)
    assert "re-queued" in retried.stdout and retried.returncode in (0, 6)


def test_seed_over_existing_keys_says_it_replaced_them(user: UserStack) -> None:
    """`--start KEY` into persons that exist replaces them (an upsert): the output must not say "created"."""
    first, _ = seed(user, 2, "--no-webhooks")
    again = user.json(
        "local", "seed", "3", "--start", str(first), "--no-webhooks", "--ready-file", str(user.ready_file)
    )
    assert (again["created"], again["replaced"]) == (1, 2)
    text = user.cli("local", "seed", "1", "--start", str(first), "--no-webhooks", "--ready-file", str(user.ready_file))
    assert "Created 0 persons and replaced 1 existing ones" in text.stdout


def test_dlq_count_and_redrive(user: UserStack) -> None:
    """docs/runbook.md: `efficy-sync dlq count`, `efficy-sync dlq redrive --queue contact`."""
    start, last = seed(user, 7, "--no-webhooks", "--profiles", "12")
    # a person the demo's conditions sync (`local seed`: key % 7 == 0 not opened, key % 5 == 0 on Robinson)
    first = next(k for k in range(start, last + 1) if k % 7 and k % 5)
    dlq = user.outputs()["ContactChangesDLQUrl"]
    change = {"integration_id": "demo", "person_key": first, "operation": "Update", "source": "webhook"}
    user.aws("sqs").send_message(
        QueueUrl=dlq, MessageBody=json.dumps(change), MessageGroupId=f"demo#{first}", MessageDeduplicationId="d1"
    )
    counted = user.json("dlq", "count")
    assert counted["queues"]["contact"] == 1 and "optout" in counted["queues"]
    assert counted["queues"]["bundle"] == 0  # the large webhooks' bundles (runbook: WebhookBundleDLQNotEmptyAlarm)
    assert "contact: 1 message(s)" in user.cli("dlq", "count").stdout
    moved = user.cli("dlq", "redrive", "--queue", "contact")
    assert "contact: moved 1 message(s)" in moved.stdout
    assert user.json("dlq", "count")["queues"]["contact"] == 0
    # the worker applies the redriven change: the person reaches APSIS One
    wait_for(f"person {first} in APSIS One", lambda: user.profile(first), timeout=60)
    assert user.json("dlq", "redrive", "--queue", "optout", "--limit", "10")["queues"]["optout"]["moved"] == 0
    assert user.json("dlq", "redrive", "--queue", "bundle", "--limit", "10")["queues"]["bundle"]["moved"] == 0


def test_commands_use_the_apsis_token_the_stack_shares(user: UserStack) -> None:
    """efficy_sync/apsis_tokens.py: APSIS allows 10 token requests a minute per account. A command finds the
    stack's shared token through the stack's output (as on AWS) and asks APSIS for none of its own; the token
    is an SSM SecureString under the output's path."""
    first, last = seed(user, 3)
    synced = next((k for k in range(first, last + 1) if k % 7 and k % 5), None)
    if synced is not None:
        wait_for(f"person {synced} in APSIS One", lambda: user.profile(synced), timeout=60)
    user.cli("reconcile", "demo", "--sample", "3", expect=None)  # the first may have to fetch and share one

    def tokens() -> int:
        calls = user.http.get(f"{user.ready['apsis_url']}/_sim/calls", timeout=10).json()
        return int(calls.get("POST /oauth/token", 0))

    before = tokens()
    for _ in range(3):
        assert user.cli("reconcile", "demo", "--sample", "3", expect=None).returncode in (0, 6)
    assert tokens() == before
    prefix = user.outputs()["ApsisTokenParameterPrefix"]
    shared = user.aws("ssm").get_parameters_by_path(Path=prefix)["Parameters"]
    assert [p["Type"] for p in shared] == ["SecureString"]


def test_a_second_local_up_leaves_the_running_stacks_ready_file_alone(user: UserStack) -> None:
    """It overwrote the file with its own endpoints and secrets, then deleted it when it stopped: the first stack
    ran on, but `local seed` said "start the local stack first" and its secrets were gone from disk."""
    before = user.ready_file.read_text()
    second = user.cli("local", "up", "--quiet", "--ready-file", str(user.ready_file), expect=1, timeout=60)
    assert "still running" in second.stderr and user.ready["aws_endpoint"] in second.stderr
    assert user.ready_file.read_text() == before


def test_a_ready_file_in_a_missing_folder_or_a_folder_gets_a_message_not_a_traceback(
    user: UserStack, tmp_path: Path
) -> None:
    """Found by probing: `local up` started the whole stack and then died with a traceback on a ready file in a
    folder that does not exist; `local seed` with a folder as its ready file did too."""
    missing = tmp_path / "no-such-folder" / "ready.json"
    up = user.cli("local", "up", "--quiet", "--ready-file", str(missing), expect=1, timeout=60)
    assert "does not exist" in up.stderr and "Traceback" not in up.stderr
    folder = user.cli("local", "up", "--quiet", "--ready-file", str(tmp_path), expect=1, timeout=60)
    assert "is a folder" in folder.stderr and "Traceback" not in folder.stderr
    seed = user.cli("local", "seed", "2", "--ready-file", str(tmp_path), expect=1, timeout=60)
    assert "is not a ready file" in seed.stderr and "Traceback" not in seed.stderr


def test_a_wrong_region_is_named_in_the_stack_not_found_message(user: UserStack) -> None:
    """Found by probing: `--region us-east-1` said the stack was not found and to set EFFICY_SYNC_STACK, never
    that the region was the one thing wrong."""
    result = user.cli("config", "list", "--region", "us-east-1", expect=1)
    assert "not found in region us-east-1" in result.stderr and "--region" in result.stderr, result.stderr
