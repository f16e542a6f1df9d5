"""The config commands that need no AWS (validate, schema, a bad apply), and how user errors look."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from efficy_sync_tools.cli import main
from efficy_sync_tools.commands import _aws

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

BROKEN = """\
integration_id: Acme EU
efficy: {base_url: "ftp://acme", api_key_secret: efficy-sync/a/efficy, webhook_secret_secret: efficy-sync/a/webhook}
apsis:  {base_url: "https://api.apsis.one", section: com.apsis1.sections.default,
         credentials_secret: efficy-sync/a/apsis, optout_token_secret: efficy-sync/a/apsis-optout}
sync_conditions:
  - {field: OPENED, equal: "1"}
  - {field: ROBINSON, equals: "0"}
field_mappings:
  - {efficy: FIRSTNAME, apsis: com.apsis1.attributes.firstname}
consent_mappings:
  - {crm_profile: 12, subscription: usercreated.topics.newsletter-ab12, channel: email}
  - {crm_profile: 14, subscription: usercreated.topics.events-ef56, channel: email}
  - {crm_profile: 13, subscription: usercreated.topics.sms-offers-cd34, channel: fax}
  - {crm_profile: 12, subscription: usercreated.topics.newsletter-ab12, channel: email}
tags:
  profiles: [{crm_profile: abc, tag: readers}]
colour: blue
"""

# path -> something the message must say about it
EXPECTED_PROBLEMS = {
    "integration_id": "found 'Acme EU'",
    "efficy.base_url": "found 'ftp://acme'",
    "sync_conditions[0]": "did you mean 'equals'?",
    "consent_mappings[2].channel": "found 'fax'; allowed: 'email', 'sms'",
    "consent_mappings[3]": "duplicate of consent_mappings[0]",
    "tags.profiles[0].crm_profile": "found 'abc'; allowed: a whole number",
    "colour": "unknown field",
}


@pytest.fixture(autouse=True)
def _restore_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands copy AWS_REGION to AWS_DEFAULT_REGION in os.environ; undo it after each test."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"))


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any AWS call would fail fast and loudly: these commands must not make one."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("CONFIG_TABLE", "no-such-table")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "efficy_sync_tools.cli", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- validate ---------------------------------------------------------------------------------------------


def test_broken_config_lists_every_problem_with_its_path(tmp_path, capsys, no_aws):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)

    assert main(["config", "validate", str(path)]) == 1

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{path}: {len(lines) - 1} problems"
    for problem_path, says in EXPECTED_PROBLEMS.items():
        line = next((x for x in lines if x.strip().startswith(f"{problem_path}:")), None)
        assert line is not None, f"no problem reported at {problem_path}:\n{out}"
        assert says in line, line
    assert "(line 13)" in next(x for x in lines if "consent_mappings[2].channel" in x)
    assert "OK" not in out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(example, capsys, no_aws):
    assert main(["config", "validate", str(example)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {example}")


def test_yaml_syntax_error_is_a_problem_with_a_line(tmp_path, capsys):
    path = tmp_path / "syntax.yaml"
    path.write_text("integration_id: acme\nefficy: {base_url: [unclosed\n")

    assert main(["config", "validate", str(path)]) == 1

    out = capsys.readouterr().out
    assert "(file): not valid YAML" in out
    assert "line" in out


def test_missing_file_is_one_line_on_stderr(tmp_path, capsys):
    assert main(["config", "validate", str(tmp_path / "nope.yaml")]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [f"efficy-sync: {tmp_path / 'nope.yaml'}: no such file"]


def test_bad_config_is_refused_by_apply_before_any_aws_call(tmp_path, capsys, no_aws):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)

    assert main(["config", "apply", str(path), "--by", "tester"]) == 1

    err = capsys.readouterr().err
    assert "consent_mappings[2].channel: found 'fax'" in err
    assert "nothing stored" in err
    assert "AWS" not in err  # refused on the file alone: AWS was never asked


@pytest.mark.parametrize("command", ["validate", "apply"])
def test_an_unquoted_no_in_a_condition_is_refused_by_the_cli_with_its_line(tmp_path, command):
    """YAML 1.1 reads `NO` as false (then "0"): the CLI refuses it, in a subprocess as an admin runs it."""
    text = (ROOT / "examples" / "acme.yaml").read_text()
    path = tmp_path / "no.yaml"
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("sync_conditions:")) + 1
    lines.insert(at, "  - {field: COUNTRY, equals: NO}")
    path.write_text("\n".join(lines) + "\n")
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_DEFAULT_REGION": "eu-west-1"}

    result = run_cli("config", command, str(path), *(["--by", "tester"] if command == "apply" else []), env=env)

    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "sync_conditions[0].equals: found NO without quotes" in out
    assert "write 'NO' (in quotes)" in out
    assert f"(line {at + 1})" in out
    assert "OK" not in result.stdout and "Traceback" not in out
    if command == "apply":
        assert "nothing stored" in result.stderr


# ---- schema -----------------------------------------------------------------------------------------------


def test_schema_is_json_with_the_top_level_properties(capsys):
    assert main(["config", "schema"]) == 0

    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {
        "integration_id",
        "efficy",
        "apsis",
        "sync_conditions",
        "field_mappings",
        "consent_mappings",
        "tags",
    } <= set(schema["properties"])
    assert set(schema["required"]) >= {"integration_id", "efficy", "apsis"}
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_out_file_accepts_the_examples_and_rejects_a_bad_channel(tmp_path):
    out = tmp_path / "schema.json"
    assert main(["config", "schema", "--out", str(out)]) == 0

    validator = jsonschema.Draft202012Validator(json.loads(out.read_text()))
    for example in EXAMPLES:
        errors = list(validator.iter_errors(yaml.safe_load(example.read_text())))
        assert errors == [], f"{example.name}: {[e.message for e in errors]}"
    broken = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    broken["consent_mappings"][0]["channel"] = "fax"
    assert list(validator.iter_errors(broken)), "the schema accepts channel 'fax'"


# ---- user errors, finding the stack -----------------------------------------------------------------------


def test_unreachable_aws_is_one_line_without_traceback():
    port = closed_port()
    result = run_cli(
        "config",
        "show",
        "demo",
        env={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "CONFIG_TABLE": "configs",
            "STATE_TABLE": "states",
        },
    )
    assert result.returncode == 4  # README "Exit codes": AWS out of reach
    assert "Traceback" not in result.stderr
    # one line that says what to do: AWS_ENDPOINT_URL on this machine is the README's local stack, not running
    assert result.stderr.strip().splitlines() == [
        f'efficy-sync: cannot reach AWS: Could not connect to the endpoint URL: "http://127.0.0.1:{port}/" '
        "(AWS_ENDPOINT_URL): the local stack is not running there; start it with "
        "`efficy-sync local up --ready-file .ready.json` and export its aws_endpoint"
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["full-sync", "status", "demo"],
        ["full-sync", "start", "demo"],
        ["full-sync", "cancel", "demo"],
        ["explain", "demo", "1001"],
        ["dlq", "redrive"],
        ["config", "list"],
    ],
)
def test_a_local_stack_that_is_not_running_is_named_in_one_line(tmp_path, command):
    """The README's shell (AWS_ENDPOINT_URL, AWS_REGION, dummy credentials) after the local stack stopped: every
    command says the stack is not running and how to start it, exit 4, no traceback."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    creds = {"AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy", "AWS_REGION": "eu-west-1"}
    result = _run_bare(tmp_path, *command, AWS_ENDPOINT_URL=endpoint, **creds)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("efficy-sync: cannot reach AWS: ") and endpoint in line
    assert line.endswith(
        "the local stack is not running there; start it with "
        "`efficy-sync local up --ready-file .ready.json` and export its aws_endpoint"
    )


def test_table_names_come_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("CONFIG_TABLE", "my-configs")
    monkeypatch.setenv("STATE_TABLE", "my-states")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")  # no stack lookup may happen
    assert _aws.table_names() == ("my-configs", "my-states")


def test_setup_library_env_leaves_what_is_set(monkeypatch):
    for variable in _aws.LIBRARY_ENV:
        monkeypatch.setenv(variable, f"set-{variable}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    from efficy_sync.settings import settings

    try:
        _aws.setup_library_env()
        assert settings().config_table == "set-CONFIG_TABLE"
        assert settings().contact_queue_url == "set-CONTACT_QUEUE_URL"
    finally:
        settings.cache_clear()


@pytest.mark.parametrize(
    ("output", "logical_id"),
    [
        ("ConfigTableName", "ConfigTable"),
        ("ContactChangesQueueUrl", "ContactChangesQueue"),
        ("ContactChangesDLQUrl", "ContactChangesDLQ"),
        ("FullSyncStateMachineArn", "FullSyncStateMachine"),
        ("PagesBucketName", "PagesBucket"),
    ],
)
def test_output_names_map_to_their_resources(output, logical_id):
    assert _aws._logical_id(output) == logical_id


# ---- global options, exit codes -----------------------------------------------------------------------------


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Only what a user's shell would have, and no AWS config file of this machine."""
    keep = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("CONFIG_TABLE", "STATE_TABLE")
    }
    return {**keep, "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"), **extra}


def _run_bare(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "efficy_sync_tools.cli", *args],
        env=_bare_env(tmp_path, **extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_region_option_before_or_after_the_command_wins_over_a_missing_environment(tmp_path):
    creds = {"AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy", "CONFIG_TABLE": "c", "STATE_TABLE": "s"}
    endpoint = f"http://127.0.0.1:{closed_port()}"
    none = _run_bare(tmp_path, "config", "list", AWS_ENDPOINT_URL=endpoint, **creds)
    assert none.returncode == 4 and "no AWS region" in none.stderr and "Traceback" not in none.stderr
    for args in (["--region", "eu-west-3", "config", "list"], ["config", "list", "--region", "eu-west-3"]):
        given = _run_bare(tmp_path, *args, AWS_ENDPOINT_URL=endpoint, **creds)
        assert given.returncode == 4 and "cannot reach AWS" in given.stderr, given.stderr


def test_dlq_commands_honour_aws_region(tmp_path):
    """They used to skip the wrapper that reads AWS_REGION: a NoRegionError traceback."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for command in (["dlq", "count"], ["dlq", "redrive"]):
        result = _run_bare(
            tmp_path,
            *command,
            AWS_ENDPOINT_URL=endpoint,
            AWS_REGION="eu-west-1",
            AWS_ACCESS_KEY_ID="dummy",
            AWS_SECRET_ACCESS_KEY="dummy",
        )
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 4 and "cannot reach AWS" in result.stderr


def test_unknown_profile_is_named(tmp_path):
    result = _run_bare(tmp_path, "--profile", "no-such-profile", "config", "list", AWS_REGION="eu-west-1")
    assert result.returncode == 4
    assert "no-such-profile" in result.stderr and "Traceback" not in result.stderr


def test_version_and_usage_error_codes(tmp_path):
    version = _run_bare(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("efficy-sync ")
    # `--output json`, before or after `--version`: one JSON document, as every other command's
    for line in (("--version", "--output", "json"), ("--output=json", "--version")):
        as_json = _run_bare(tmp_path, *line)
        assert as_json.returncode == 0 and json.loads(as_json.stdout)["version"] == version.stdout.split()[1]
    usage = _run_bare(tmp_path, "full-sync", "start")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    assert _aws.EXIT_REFUSED == 3 and _aws.EXIT_USAGE == 2  # a refused start must not look like a usage error
    from efficy_sync_tools.commands import full_sync

    assert full_sync.REFUSED == _aws.EXIT_REFUSED


def test_a_confirmed_count_of_removals_must_be_a_count_and_excludes_the_blanket_flag(tmp_path):
    """Refused before any AWS call (exit 2, usage): a run started with a count nobody meant would remove up to it."""
    for count in ("0", "-5", "many", "2.5"):
        wrong = _run_bare(tmp_path, "full-sync", "start", "acme", "--allow-removals-up-to", count)
        assert wrong.returncode == 2 and "a count of removals" in wrong.stderr, (count, wrong.stderr)
    both = _run_bare(tmp_path, "full-sync", "start", "acme", "--allow-removals", "--allow-removals-up-to", "3")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_validate_output_json_is_one_document(tmp_path, capsys, no_aws):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["config", "validate", str(path), "--output", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is False and document["problems"][0]["path"]
    assert document["integration_id"] == "Acme EU"  # what the file names, even if it is one of its problems
    assert main(["--output", "json", "config", "validate", str(ROOT / "examples" / "demo.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["integration_id"] == "demo"


def test_building_the_parser_loads_neither_requests_nor_boto3_nor_the_package_metadata():
    """Every command runs `build_parser`, which imports each command module: their top-level imports are paid by
    every `efficy-sync` call (the demo once loaded requests for all of them, `--version` the package metadata)."""
    probe = "import sys; from efficy_sync_tools.cli import build_parser; build_parser(); "
    probe += "print(sorted(m for m in ('requests', 'boto3', 'botocore', 'importlib.metadata') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("key", ["abc", "0", "-3", "1.5"])
def test_a_person_key_that_is_not_one_is_a_usage_error(key, capsys, no_aws):
    """Exit 2 like any other wrong argument (the help's exit codes), before any AWS call."""
    assert main(["explain", "demo", key]) == 2
    assert "PERSON_KEY must be an Efficy K_CONTACT" in capsys.readouterr().err


def test_an_empty_reconcile_range_is_a_usage_error(capsys, no_aws):
    """It checked nobody and exited 0 with "drift: 0": a scheduled check would take that for a clean account."""
    assert main(["reconcile", "demo", "--from-key", "5000", "--to-key", "10"]) == 2
    assert "--to-key 10 is before --from-key 5000" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "redrive", "--limit", "0"],  # moved nothing and exited 0: the operator thought it had worked
        ["dlq", "redrive", "--limit", "-1"],
        ["reconcile", "demo", "--sample", "0"],  # exited 1, as a failed run
        ["local", "seed", "0"],
        ["full-sync", "list", "demo", "--limit", "0"],
        ["full-sync", "cancel", "demo", "--wait", "nan"],
        ["health", "demo", "--limit", "-2"],
        ["demo", "--persons", "0"],
    ],
)
def test_a_number_that_makes_no_sense_is_a_usage_error(argv, tmp_path):
    """Exit 2 naming the option, before any AWS call, as the README's exit codes say."""
    result = _run_bare(tmp_path, *argv)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_a_config_too_large_to_store_is_a_problem_for_validate_not_an_aws_error_for_apply(tmp_path, capsys, no_aws):
    """6,000 tags: valid, but over DynamoDB's 400 KB item; apply failed with TransactWriteItems' raw error.
    (CRM-profile tags: query tags stop at 200, entry_checks.MAX_QUERY_TAGS.)"""
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["tags"]["profiles"] = [
        {"crm_profile": q, "tag": f"profile-tag-number-{q:05d}-with-a-long-name"} for q in range(1, 6001)
    ]
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "(file)" in out and "KB stored; a version holds at most 360 KB" in out
    assert main(["config", "apply", str(path)]) == 1  # refused before any AWS call (no_aws)
    assert "nothing stored" in capsys.readouterr().err


def test_secret_names_follow_the_prefix_of_the_stack_they_are_for(tmp_path, capsys, monkeypatch, no_aws):
    """A stack deployed with SecretsPrefix=efficy-sync-prod reads only efficy-sync-prod/... secrets; offline,
    `validate` learns the prefix from EFFICY_SYNC_SECRETS_PREFIX (online and `apply` from the stack)."""
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("EFFICY_SYNC_SECRETS_PREFIX", "efficy-sync-prod")
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "efficy.api_key_secret" in out and "efficy-sync-prod/<integration>/efficy" in out

    for block, field in (("efficy", "api_key_secret"), ("efficy", "webhook_secret_secret"),
                         ("apsis", "credentials_secret"), ("apsis", "optout_token_secret")):  # fmt: skip
        data[block][field] = data[block][field].replace("efficy-sync/", "efficy-sync-prod/", 1)
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "validate", str(path)]) == 0, capsys.readouterr().out


def _denied(name: str) -> None:
    from botocore.exceptions import ClientError

    raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DescribeStacks")


def test_the_secrets_prefix_comes_from_the_stack_whose_tables_are_used(monkeypatch):
    """Review of the SecretsPrefix change: CONFIG_TABLE named the dev stack's table while a default-named stack
    existed (its prefix won, so `apply` refused the dev names and accepted ones dev could not read); a role
    with the tables but no DescribeStacks failed; a stack older than the output got the environment's prefix,
    which its IAM never allowed."""
    from efficy_sync_tools.commands import _aws

    monkeypatch.delenv("EFFICY_SYNC_STACK", raising=False)
    monkeypatch.setenv("EFFICY_SYNC_SECRETS_PREFIX", "efficy-sync-dev")
    monkeypatch.setenv("CONFIG_TABLE", "efficy-sync-dev-ConfigTable")
    default_stack = ({"SecretsPrefix": "efficy-sync", "ConfigTableName": "efficy-sync-ConfigTable"}, {})
    monkeypatch.setattr(_aws, "_describe_stack", lambda name: default_stack)
    assert _aws.secrets_prefix(from_stack=True) == "efficy-sync-dev"
    monkeypatch.setattr(_aws, "_describe_stack", _denied)
    assert _aws.secrets_prefix(from_stack=True) == "efficy-sync-dev"
    monkeypatch.delenv("CONFIG_TABLE")
    with pytest.raises(Exception, match="AccessDenied"):
        _aws.secrets_prefix(from_stack=True)  # no table named: the stack is the only way to know
    monkeypatch.setattr(_aws, "_describe_stack", lambda name: ({"ConfigTableName": "t"}, {}))  # before the output
    assert _aws.secrets_prefix(from_stack=True) == "efficy-sync"
    monkeypatch.setenv("CONFIG_TABLE", "t")  # the stack's own table
    monkeypatch.setattr(
        _aws, "_describe_stack", lambda name: ({"SecretsPrefix": "efficy-sync-x", "ConfigTableName": "t"}, {})
    )
    assert _aws.secrets_prefix(from_stack=True) == "efficy-sync-x"


def test_output_piped_into_a_reader_that_went_away_ends_quietly() -> None:
    """`efficy-sync ... | head -1`: the write fails with EPIPE once the reader is gone. It was "efficy-sync:
    [Errno 32] Broken pipe" with exit 1 (or, from some commands, a traceback); a CLI stops quietly there."""
    process = subprocess.Popen(
        [sys.executable, "-m", "efficy_sync_tools.cli", "config", "schema"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the command writes anything
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, errors
    assert errors == ""


def test_validate_notes_a_crm_profile_behind_two_consent_mappings(tmp_path, capsys, no_aws):
    """An opt-out of one of them is not written back (optout.WriteBack.slots): the user hears of it up front."""
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["consent_mappings"][1]["crm_profile"] = 12  # the SMS offers behind the newsletter's profile
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: consent_mappings[0, 1]: CRM profile 12 backs 2 subscriptions or channels" in out
    assert out.splitlines()[-1].startswith(f"OK: {path}")


def test_local_seed_on_the_ready_file_of_a_stopped_stack_says_to_start_it(tmp_path):
    """A crash (or a kill) leaves the ready file behind: `local seed` said "did not answer ... (HTTPConnectionPool(host=
    ..., port=...): Max retries exceeded ...)); is it running?" instead of what to do."""
    dead = f"http://127.0.0.1:{closed_port()}"
    ready = tmp_path / ".ready.json"
    ready.write_text(
        json.dumps(
            {"efficy_url": dead, "api_url": f"{dead}/dev", "demo": {"integration_id": "demo", "webhook_secret": "s"}}
        )
    )
    result = _run_bare(tmp_path, "local", "seed", "3", "--ready-file", str(ready))
    assert result.returncode == 4 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"efficy-sync: the local stack of {ready} is not running (its Efficy simulator did not answer at {dead}): "
        f"start it with `efficy-sync local up --ready-file {ready}`"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["reconcile", "demo", "--fi"],  # ran as --fix: a typo repaired APSIS One
        ["config", "validate", "cfg.yaml", "--onlin"],
        ["full-sync", "start", "demo", "--allow-removals-up"],
        ["full-sync", "start", "demo", "--dry"],
    ],
)
def test_an_abbreviated_option_is_a_usage_error_not_the_option_it_starts(argv, tmp_path):
    """argparse expands an unambiguous prefix by default: what runs must be what the user typed."""
    result = _run_bare(tmp_path, *argv)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "unrecognized arguments" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_retry_category_is_a_usage_error(tmp_path):
    result = _run_bare(tmp_path, "health", "demo", "--retry", "bogus")
    assert result.returncode == 2 and "unknown category 'bogus'" in result.stderr, result.stderr
