"""`config apply`, `config show` and the store's conflicts, with stored versions this CLI cannot read (moto in-process).

A version applied by a newer CLI, with a setting this one does not know, made ConfigStore raise pydantic's
ValidationError: `config apply` of another integration ended in a traceback (`_other_configs` only caught
ConfigError), and so did `config show` and `config apply` of that integration itself. The store now raises
UnreadableConfig, a ConfigError naming the integration and the version. And `config apply` stored its file on top
of whatever version was live by then, not the one it had shown the changes against, so a version applied
meanwhile (here: a first version) was silently overwritten.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import yaml
from efficy_sync.config import load_config_text
from efficy_sync.store.configs import ConfigStore
from efficy_sync_tools.cli import main
from efficy_sync_tools.commands import config as config_cmd

from tests.support import ROOT, create_pk_sk_table


def _config(integration_id: str, keyspace: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["integration_id"] = integration_id
    data["efficy"]["base_url"] = "http://127.0.0.1:9/crm"
    data["apsis"]["base_url"] = "http://127.0.0.1:9"
    data["apsis"]["keyspace"] = keyspace
    return data


def _store_raw(integration_id: str, body: dict[str, Any], versions: tuple[int, ...] = (1,)) -> None:
    """Versions as a newer CLI stored them (this one's model refuses them)."""
    for version in versions:
        for sk in ("CURRENT", f"V#{version:06d}"):
            boto3.client("dynamodb").put_item(
                TableName="config",
                Item={
                    "pk": {"S": f"CONFIG#{integration_id}"},
                    "sk": {"S": sk},
                    "body": {"S": json.dumps(body)},
                    "version": {"N": str(version)},
                    "applied_at": {"S": "2026-01-01T00:00:00+00:00"},
                    "applied_by": {"S": "newer-cli"},
                    "comment": {"S": ""},
                },
            )


@pytest.fixture
def cli_env(in_process_aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    create_pk_sk_table("config", in_process_aws)
    monkeypatch.setenv("CONFIG_TABLE", "config")
    monkeypatch.setenv("STATE_TABLE", "state")
    monkeypatch.setenv("CONTACT_QUEUE_URL", "queue")
    sm = boto3.client("secretsmanager")
    for kind in ("efficy", "webhook", "apsis", "apsis-optout"):
        sm.create_secret(Name=f"efficy-sync/demo/{kind}", SecretString="x")


def test_apply_is_not_blocked_by_another_integrations_version_from_a_newer_cli(cli_env, capsys, tmp_path) -> None:
    _store_raw("other", {**_config("other", "usercreated.keyspaces.other"), "a_newer_setting": 3})

    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(_config("demo", "com.apsis1.keyspaces.crm-id"), sort_keys=False))
    code = main(["config", "apply", str(path), "--by", "tester"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "applied demo version 1" in out.out


@pytest.mark.parametrize("version", [None, 2])
def test_show_of_a_version_from_a_newer_cli_is_a_clear_error(cli_env, capsys, version) -> None:
    _store_raw("demo", {**_config("demo", "com.apsis1.keyspaces.crm-id"), "a_newer_setting": 3}, versions=(1, 2))
    code = main(["config", "show", "demo", *(["--version", str(version)] if version else [])])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and "ValidationError" not in err
    assert "demo version 2 cannot be read by this efficy-sync" in err
    assert "a_newer_setting: unknown field" in err


def test_apply_over_an_own_version_from_a_newer_cli_is_refused_clearly(cli_env, capsys, tmp_path) -> None:
    _store_raw("demo", {**_config("demo", "com.apsis1.keyspaces.crm-id"), "a_newer_setting": 3}, versions=(1, 2))
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(_config("demo", "com.apsis1.keyspaces.crm-id"), sort_keys=False))
    code = main(["config", "apply", str(path), "--by", "tester"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and "ValidationError" not in err
    assert "demo version 2 cannot be read by this efficy-sync" in err and "nothing stored" in err
    assert [v["version"] for v in ConfigStore("config").history("demo")] == [1, 2]


def test_a_first_apply_is_refused_when_another_admin_created_the_integration_meanwhile(
    cli_env, monkeypatch, capsys, tmp_path
) -> None:
    theirs = _config("demo", "com.apsis1.keyspaces.crm-id")
    mine = {**theirs, "consent_mappings": theirs["consent_mappings"][:1]}
    real_missing_secrets = config_cmd.missing_secrets

    def missing_secrets_while_b_applies(cfg):  # type: ignore[no-untyped-def]
        ConfigStore("config").put(load_config_text(yaml.safe_dump(theirs)), applied_by="admin-b")
        return real_missing_secrets(cfg)

    monkeypatch.setattr(config_cmd, "missing_secrets", missing_secrets_while_b_applies)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(mine, sort_keys=False))
    code = main(["config", "apply", str(path), "--by", "admin-a"])
    err = capsys.readouterr().err
    assert code == 1
    assert "version 1 was applied meanwhile by admin-b" in err and "nothing stored" in err
    assert [v["applied_by"] for v in ConfigStore("config").history("demo")] == ["admin-b"]
