"""`efficy-sync config ...` against the local stack: apply, show round trips, history, refusals, --online."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from tests.support import ROOT, Stack

EXAMPLE = ROOT / "examples" / "acme.yaml"


def new_integration_id() -> str:
    """An integration of this test's own: the shared `demo` one must keep behaving as other tests expect."""
    return f"cli-{uuid.uuid4().hex[:10]}"


def write_config(path: Path, integration_id: str, **changes: object) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["integration_id"] = integration_id
    # `config apply` refuses secrets that do not exist: reuse the local stack's (README, "Quick start")
    data["efficy"].update(api_key_secret="efficy-sync/demo/efficy", webhook_secret_secret="efficy-sync/demo/webhook")
    data["apsis"].update(
        credentials_secret="efficy-sync/demo/apsis",
        optout_token_secret="efficy-sync/demo/apsis-optout",
        # the demo's APSIS account, from another CRM: a keyspace of its own (config/neighbours.py)
        keyspace="usercreated.keyspaces.cli-config-test",
    )
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def versions(stack: Stack, integration_id: str) -> list[dict]:
    result = stack.cli("config", "history", integration_id, "--format", "json", check=True)
    return json.loads(result.stdout)


def test_apply_show_round_trip_and_history(stack: Stack, tmp_path: Path) -> None:
    iid = new_integration_id()
    first = write_config(tmp_path / "v1.yaml", iid)

    applied = stack.cli("config", "apply", str(first), "--by", "tester", "--comment", "first", check=True)
    assert f"applied {iid} version 1" in applied.stdout
    assert f"new integration '{iid}'" in applied.stdout

    mappings = [
        {"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"},
        {"efficy": "NAME", "apsis": "com.apsis1.attributes.lastname"},
    ]
    second = write_config(tmp_path / "v2.yaml", iid, field_mappings=mappings, on_condition_lost="untag")
    applied = stack.cli("config", "apply", str(second), "--by", "other", "--comment", "add last name", check=True)
    assert f"applied {iid} version 2 (was 1)" in applied.stdout
    assert "on_condition_lost: 'leave' -> 'untag'" in applied.stdout
    assert "field_mappings: added {efficy: 'NAME', apsis: 'com.apsis1.attributes.lastname'" in applied.stdout

    # show -> file -> apply takes it back unchanged, in both formats, and stores nothing
    for fmt in ("yaml", "json"):
        shown = stack.cli("config", "show", iid, "--format", fmt, check=True).stdout
        if fmt == "json":
            assert json.loads(shown)["field_mappings"][1]["efficy"] == "NAME"
        path = tmp_path / f"shown.{fmt}"
        path.write_text(shown)
        again = stack.cli("config", "apply", str(path), "--by", "tester", check=True)
        assert again.stdout.strip() == f"no changes: {iid} stays at version 2 (nothing stored)"

    old = stack.cli("config", "show", iid, "--version", "1", check=True).stdout
    assert yaml.safe_load(old)["field_mappings"] == [mappings[0]]  # what it set: no default pinned

    history = versions(stack, iid)
    assert [(v["version"], v["applied_by"], v["comment"]) for v in history] == [
        (1, "tester", "first"),
        (2, "other", "add last name"),
    ]
    assert all(v["applied_at"] for v in history)
    text = stack.cli("config", "history", iid, check=True).stdout
    assert "add last name" in text
    assert "(* current: version 2)" in text


def test_moving_an_integration_to_another_section_or_keyspace_is_refused(stack: Stack, tmp_path: Path) -> None:
    """Person states say what was sent to the current destination: every later sync, full syncs included, would
    have left another section or keyspace half-filled while `config apply` said no full sync was needed."""
    iid = new_integration_id()
    stack.cli("config", "apply", str(write_config(tmp_path / "v1.yaml", iid)), check=True)
    data = yaml.safe_load((tmp_path / "v1.yaml").read_text())
    for field, value in (("section", "usercreated.sections.europe"), ("keyspace", "usercreated.keyspaces.moved")):
        moved = tmp_path / f"{field}.yaml"
        moved.write_text(yaml.safe_dump({**data, "apsis": {**data["apsis"], field: value}}, sort_keys=False))
        refused = stack.cli("config", "apply", str(moved))
        assert refused.returncode == 1, refused.stdout
        assert (
            f"another APSIS One {field} (nothing stored)" in refused.stderr and "new integration_id" in refused.stderr
        )
        assert "Traceback" not in refused.stderr
    assert [v["version"] for v in versions(stack, iid)] == [1]


def test_bad_config_is_refused_and_nothing_is_stored(stack: Stack, tmp_path: Path) -> None:
    iid = new_integration_id()
    stack.cli("config", "apply", str(write_config(tmp_path / "good.yaml", iid)), "--by", "tester", check=True)
    before = stack.cli("config", "show", iid, check=True).stdout

    bad = write_config(
        tmp_path / "bad.yaml",
        iid,
        consent_mappings=[
            {"crm_profile": 12, "subscription": "usercreated.topics.newsletter-ab12", "channel": "email"},
            {"crm_profile": 14, "subscription": "usercreated.topics.events-ef56", "channel": "fax"},
        ],
        sync_conditions=[{"field": "OPENED", "equal": "1"}],
    )
    result = stack.cli("config", "apply", str(bad), "--by", "tester")

    assert result.returncode == 1
    assert "consent_mappings[1].channel: found 'fax'; allowed: 'email', 'sms'" in result.stderr
    assert "sync_conditions[0]" in result.stderr
    assert "nothing stored" in result.stderr
    assert "Traceback" not in result.stderr
    assert [v["version"] for v in versions(stack, iid)] == [1]
    assert stack.cli("config", "show", iid, check=True).stdout == before

    # a bad first version does not create the integration either
    other = new_integration_id()
    bad_new = write_config(tmp_path / "bad-new.yaml", other, on_delete="shred")
    assert stack.cli("config", "apply", str(bad_new)).returncode == 1
    missing = stack.cli("config", "history", other)
    assert missing.returncode == 1
    assert f"unknown integration '{other}'" in missing.stderr


def test_demo_round_trips_without_a_new_version(stack: Stack, tmp_path: Path) -> None:
    before = versions(stack, "demo")
    shown = tmp_path / "demo.yaml"
    shown.write_text(stack.cli("config", "show", "demo", check=True).stdout)

    result = stack.cli("config", "apply", str(shown), "--by", "tester", check=True)

    assert result.stdout.startswith("no changes: demo stays at version")
    assert versions(stack, "demo") == before


def test_unknown_integration_is_one_line(stack: Stack) -> None:
    result = stack.cli("config", "show", "no-such-integration")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("efficy-sync: unknown integration 'no-such-integration'; known: ")
    assert "demo" in lines[0]


def online_demo_copy(stack: Stack, tmp_path: Path, key: int) -> dict:
    """examples/demo.yaml pointed at this stack's simulators, with a tag query of this test's own (the
    simulator starts without queries, and 3618 may be someone else's)."""
    stack.http.post(
        f"{stack.efficy_url}/_sim/queries",
        json={"queries": [{"K_QUERY": key, "name": "CLI test", "members": []}]},
        timeout=10,
    ).raise_for_status()
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["efficy"]["base_url"] = f"{stack.efficy_url}/crm"
    data["apsis"]["base_url"] = stack.apsis_url
    data["tags"]["queries"] = [{"query": key, "tag": "vip"}]
    return data


def test_validate_online_against_the_simulators(stack: Stack, tmp_path: Path, key: int) -> None:
    path = tmp_path / "demo-online.yaml"
    path.write_text(yaml.safe_dump(online_demo_copy(stack, tmp_path, key), sort_keys=False))

    result = stack.cli("config", "validate", "--online", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
    *notes, verdict = result.stdout.splitlines()
    assert verdict.startswith(f"OK: {path}")
    assert "references found in Efficy and APSIS One" in verdict
    # the CRM-profile detail is compared with the records export when the first page has members, else a note
    assert all(n.startswith("note: efficy.profile_detail not checked") for n in notes), notes


def test_validate_online_reports_what_does_not_exist(stack: Stack, tmp_path: Path, key: int) -> None:
    data = online_demo_copy(stack, tmp_path, key)
    data["consent_mappings"][2]["subscription"] = "usercreated.topics.events-ef57"
    data["consent_mappings"][1]["crm_profile"] = 9999
    data["field_mappings"][3]["efficy"] = "LANGUAGES"
    data["tags"]["queries"][0]["query"] = key + 1
    data["efficy"]["webhook_secret_secret"] = "efficy-sync/cli-test-missing/webhook"
    path = tmp_path / "broken-online.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    result = stack.cli("config", "validate", "--online", str(path))

    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "consent_mappings[2].subscription: found 'usercreated.topics.events-ef57'" in out
    assert "did you mean 'usercreated.topics.events-ef56'?" in out
    assert "consent_mappings[1].crm_profile: found 9999" in out
    assert "field_mappings[3].efficy: found 'LANGUAGES'" in out
    assert f"tags.queries[0].query: found {key + 1}" in out
    assert "efficy.webhook_secret_secret: found 'efficy-sync/cli-test-missing/webhook'" in out
    assert next(line for line in out.splitlines() if not line.startswith("note: ")) == f"{path}: 5 problems"


def test_a_library_warning_goes_to_stderr_and_never_into_the_json_result(stack: Stack) -> None:
    """A command's result is its stdout (`--output json`: one JSON document); the library's logs go to stderr.
    The fault: an SSM path the stack may not write (AWS reserves the `aws` prefix), so sharing the APSIS token
    fails and the client says so in a warning, then works with a token of its own."""
    import subprocess
    import sys

    env = {**stack.env(), "APSIS_TOKEN_PARAMETER_PREFIX": "/aws/not-ours"}
    result = subprocess.run(
        [sys.executable, "-m", "efficy_sync_tools.cli", "reconcile", "demo", "--sample", "1", "--output", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 6), result.stderr
    assert json.loads(result.stdout)["integration_id"] == "demo"
    assert "APSIS token store" in result.stderr


def test_applying_the_demo_example_with_its_placeholder_urls_is_refused(stack: Stack) -> None:
    """examples/demo.yaml's base URLs use port 0, which the local stack fills in: applied as it is, it broke the
    running demo (found following the README by hand). Refused, and the stored demo stays as it was."""
    before = stack.cli("config", "show", "demo", check=True).stdout
    result = stack.cli("config", "apply", str(ROOT / "examples" / "demo.yaml"), "--by", "tester")
    assert result.returncode == 1
    assert "port 0, a placeholder" in result.stderr and "Traceback" not in result.stderr
    assert stack.cli("config", "show", "demo", check=True).stdout == before


def test_apply_refuses_a_second_crm_in_the_demo_s_apsis_account_and_keyspace(stack: Stack, tmp_path: Path) -> None:
    """Key 17 of two Efficy environments is two people; in one keyspace of one account it is one profile, and
    one CRM's delete or opt-out would reach the other's person."""
    demo = json.loads(stack.cli("config", "show", "demo", "--format", "json", check=True).stdout)
    iid = new_integration_id()
    path = write_config(tmp_path / "clash.yaml", iid)
    data = yaml.safe_load(path.read_text())
    data["apsis"].update(base_url=demo["apsis"]["base_url"], keyspace=demo["apsis"]["keyspace"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = stack.cli("config", "apply", str(path))
    assert refused.returncode == 1, refused.stdout
    assert "would share APSIS One profiles (nothing stored)" in refused.stderr and "'demo'" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert stack.cli("config", "history", iid).returncode == 1  # nothing stored
    data["apsis"]["keyspace"] = "usercreated.keyspaces.crm-second"  # a keyspace of its own
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert f"applied {iid} version 1" in stack.cli("config", "apply", str(path), check=True).stdout
