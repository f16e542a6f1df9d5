"""`config apply` showed the changes against the version it read, then `ConfigStore.put` re-read the current
version and stored the file on top of whatever was live by then: a version another admin applied in between was
silently overwritten, although store/configs.py promises "two admins applying at once cannot silently overwrite
each other". The apply is now conditional on the version it showed the changes against."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from efficy_sync import aws
from efficy_sync.config import load_config_text
from efficy_sync.store.configs import ConfigStore
from efficy_sync_tools.cli import main
from efficy_sync_tools.commands import config as config_cmd

from tests.support import Stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def test_an_apply_based_on_an_older_version_does_not_silently_drop_a_version_applied_meanwhile(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = stack.create_integration(tmp_path)  # version 1: the demo's three consent mappings
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    aws.reset_clients()
    try:
        store = ConfigStore(stack.names["ConfigTable"])
        original = yaml.safe_load((tmp_path / f"{iid}.yaml").read_text())

        # admin A's file: version 1 plus one field mapping
        mine = tmp_path / "admin-a.yaml"
        extra = {"efficy": "CITY", "apsis": "com.apsis1.attributes.city"}
        mine.write_text(yaml.safe_dump({**original, "field_mappings": [*original["field_mappings"], extra]}))

        # admin B, while A's apply is under way: removes the first consent mapping (found to be wrong)
        fixed = {**original, "consent_mappings": original["consent_mappings"][1:]}
        real_missing_secrets = config_cmd.missing_secrets

        def missing_secrets_while_b_applies(cfg):  # type: ignore[no-untyped-def]
            store.put(load_config_text(yaml.safe_dump(fixed)), applied_by="admin-b", comment="wrong mapping removed")
            return real_missing_secrets(cfg)

        monkeypatch.setattr(config_cmd, "missing_secrets", missing_secrets_while_b_applies)
        code = main(["config", "apply", str(mine), "--by", "admin-a"])
        out = capsys.readouterr()

        live = ConfigStore(stack.names["ConfigTable"]).get(iid)
        b_version = store.version(iid, 2)
        # A must be refused ("another version was applied meanwhile"), leaving B's version live
        assert code != 0 and live.consent_mappings == b_version.consent_mappings, (
            f"admin A's apply (exit {code}) silently brought back the consent mapping admin B removed in version 2;"
            f" A was told only:\n{out.out}"
        )
        assert "version 2 was applied meanwhile by admin-b" in out.err and "nothing stored" in out.err
        assert "based on version 1" in out.err and "Traceback" not in out.err
        assert [v["version"] for v in store.history(iid)] == [1, 2]
    finally:
        aws.reset_clients()
