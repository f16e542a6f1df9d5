"""What `config apply` and `config validate --online` tell a consultant (tools/.../commands/config.py)."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.clients.errors import EfficyUnavailable
from efficy_sync_tools.commands._aws import EXIT_UNREACHABLE, CliError
from efficy_sync_tools.commands.config import _listing, first_load_notes

from tests.unit.test_config_neighbours import cfg


def test_a_new_integration_in_diff_mode_is_told_how_to_keep_the_accounts_opt_outs() -> None:
    new = cfg("n", "https://a.efficy.cloud/crm")
    (note,) = first_load_notes(None, new)
    assert "apsis.existing_optouts: always" in note and "--write-mode import" in note
    assert first_load_notes(new, new) == []  # not new
    assert first_load_notes(None, cfg("n", "https://a.efficy.cloud/crm", existing_optouts="always")) == []


def test_validate_online_reads_an_outage_as_out_of_reach_not_as_a_wrong_address() -> None:
    """Found by probing: a 503 from Efficy was reported as `efficy.base_url: ... did not answer there` with
    exit 1, and a consultant would go and edit a correct URL."""

    def down() -> list[dict[str, Any]]:
        raise EfficyUnavailable("Efficy answered 503 to list_fields", status=503)

    def refused_connection() -> list[dict[str, Any]]:
        raise EfficyUnavailable("connection refused")

    with pytest.raises(CliError) as raised:
        _listing("Efficy", [("fields", down, "name")], on_auth=Exception, on_unreachable=lambda e: e)  # type: ignore[arg-type]
    assert raised.value.code == EXIT_UNREACHABLE and "out of reach for now" in str(raised.value)
    _, problems, _ = _listing(
        "Efficy",
        [("fields", refused_connection, "name")],
        on_auth=Exception,  # type: ignore[arg-type]
        on_unreachable=lambda e: f"wrong address? {e}",  # type: ignore[arg-type,return-value]
    )
    assert problems == ["wrong address? connection refused"]
