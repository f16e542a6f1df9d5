"""An operator's wrong turns, run as the README runs the CLI (a subprocess with only its environment, on the
local stack started as it says): each ends with its exit code (README "Exit codes"), no traceback, and a message
that says what to do next."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from tests.user_stack import UserStack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240), pytest.mark.xdist_group("user_stack")]

KINDS = {
    ("efficy", "api_key_secret"): "efficy",
    ("efficy", "webhook_secret_secret"): "webhook",
    ("apsis", "credentials_secret"): "apsis",
    ("apsis", "optout_token_secret"): "apsis-optout",
}


def config_with_own_secrets(user: UserStack, workdir: Path) -> tuple[str, Path, dict[str, str]]:
    """The demo's config under a new id whose secrets are its own names (efficy-sync/<id>/<kind>), not created:
    (integration id, config file, config path -> secret name)."""
    data = yaml.safe_load(user.cli("config", "show", "demo").stdout)
    integration_id = f"ops-{uuid.uuid4().hex[:8]}"
    data["integration_id"] = integration_id
    names = {}
    for (section, field), kind in KINDS.items():
        names[f"{section}.{field}"] = data[section][field] = f"efficy-sync/{integration_id}/{kind}"
    path = workdir / f"{integration_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return integration_id, path, names


def test_cancel_with_no_run_going_says_where_to_look(user: UserStack, tmp_path: Path) -> None:
    integration_id = user.own_integration(tmp_path)
    nothing = user.cli("full-sync", "cancel", integration_id, expect=1)  # README: 1, the command's answer is no
    assert nothing.stdout.strip().splitlines() == [
        f"No full sync of {integration_id} is running: nothing to cancel "
        f"(its last run: efficy-sync full-sync status {integration_id})."
    ]
    assert "Traceback" not in nothing.stderr


def test_apply_with_missing_secrets_says_how_to_create_them(user: UserStack, tmp_path: Path) -> None:
    integration_id, path, names = config_with_own_secrets(user, tmp_path)
    refused = user.cli("config", "apply", str(path), expect=1)
    assert "Traceback" not in refused.stderr
    for config_path, name in names.items():
        assert f"  {config_path}: secret {name!r} not found in Secrets Manager" in refused.stderr
    assert refused.stderr.rstrip().endswith(
        "create each (`aws secretsmanager create-secret --name NAME --secret-string ...`; the APSIS credentials "
        'as JSON {"client_id": ..., "client_secret": ...}), or correct the names, then apply again'
    )
    assert f"unknown integration '{integration_id}'" in user.cli("config", "show", integration_id, expect=1).stderr


def test_a_secret_deleted_after_apply_is_named_with_what_to_do(user: UserStack, tmp_path: Path) -> None:
    integration_id, path, names = config_with_own_secrets(user, tmp_path)
    sm = user.aws("secretsmanager")
    demo = yaml.safe_load(user.cli("config", "show", "demo").stdout)
    for (section, field), _kind in KINDS.items():  # the same values as the demo's: the same simulators
        value = sm.get_secret_value(SecretId=demo[section][field])["SecretString"]
        sm.create_secret(Name=names[f"{section}.{field}"], SecretString=value)
    user.cli("config", "apply", str(path))
    gone = names["efficy.api_key_secret"]
    sm.delete_secret(SecretId=gone, ForceDeleteWithoutRecovery=True)

    for command in (["explain", integration_id, "1001"], ["reconcile", integration_id, "--sample", "5"]):
        result = user.cli(*command, expect=1)  # README: 1, a missing secret
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"efficy-sync: secret {gone!r} not found in Secrets Manager: create it (`aws secretsmanager "
            f"create-secret --name {gone} --secret-string ...`), or name an existing one in the config and apply "
            "it again"
        ], command


def test_a_run_is_found_by_the_execution_name_start_printed(user: UserStack, tmp_path: Path) -> None:
    """`full-sync start` prints the execution's name, the refusal and the Step Functions console show it too:
    `status --run` and `report` took only the run id, and answered "no run" for the name the user was shown."""
    integration_id = user.own_integration(tmp_path)
    started = user.cli("full-sync", "start", integration_id, "--follow")
    execution = re.search(r"\(execution (\S+)\)\.", started.stdout)
    assert execution, started.stdout
    run_id = user.json("full-sync", "list", integration_id)["runs"][0]["run_id"]
    executions = user.aws("stepfunctions").list_executions(stateMachineArn=user.outputs()["FullSyncStateMachineArn"])
    [arn] = [e["executionArn"] for e in executions["executions"] if e["name"] == execution.group(1)]
    for name in (execution.group(1), arn):
        assert user.json("full-sync", "status", integration_id, "--run", name)["run_id"] == run_id
        assert user.json("full-sync", "report", integration_id, name)["run_id"] == run_id
    # a run that is none of them, and an empty one (it showed the newest run), are errors naming where ids are
    for command in (["status", integration_id, "--run", ""], ["report", integration_id, "bogus"]):
        missing = user.cli("full-sync", *command, expect=1)
        assert missing.stdout == "" and "Traceback" not in missing.stderr
        [line] = missing.stderr.strip().splitlines()
        assert line.endswith(
            f"of {integration_id}: give a run id from `efficy-sync full-sync list {integration_id}` "
            "(or the execution name `full-sync start` printed)"
        ), line


def test_credentials_apsis_refuses_say_where_to_correct_them(user: UserStack, tmp_path: Path) -> None:
    integration_id = user.own_integration(tmp_path)
    apsis = user.ready["apsis_url"]
    fault = {"path_regex": ".*", "status": 401, "rate": 1.0}  # a token the stack shares, and a new one, refused
    user.http.post(f"{apsis}/_sim/faults", json=fault, timeout=10).raise_for_status()
    try:
        refused = user.cli("reconcile", integration_id, "--sample", "3", expect=1)  # README: 1, the command failed
    finally:
        user.http.delete(f"{apsis}/_sim/faults", timeout=10)
    assert refused.stdout == "" and "Traceback" not in refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert (
        line.startswith("efficy-sync: APSIS")
        and "401 [permission]" in line
        and line.endswith(
            ": the API refused the integration's credentials; correct them in the secret its config names "
            "(`efficy-sync config validate FILE --online` checks them)"
        )
    ), line
