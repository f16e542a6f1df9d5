"""A person deleted in Efficy: what happens in APSIS One is the integration's choice, and it is remembered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Stack, person, wait_for


def _state(stack: Stack, integration_id: str, key: int) -> dict:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.names["StateTable"],
            Key={"pk": {"S": f"PERSON#{integration_id}#{key}"}, "sk": {"S": "STATE"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return json.loads(item["doc"]["S"]) if item else {}


def _webhook(stack: Stack, integration_id: str, key: int, operation: str, date: str) -> None:
    record = {"table": 11000, "key": key, "operation": operation, "fields": {}, "date": date}
    assert stack.signed_webhook([record], integration_id=integration_id).status_code == 202


@pytest.mark.parametrize("on_delete", ["delete", "untag", "ignore"])
def test_delete_in_efficy_follows_on_delete(stack: Stack, key: int, tmp_path: Path, on_delete: str) -> None:
    iid = stack.create_integration(tmp_path, on_delete=on_delete)
    stack.seed([person(key)])
    _webhook(stack, iid, key, "Create", "2026-04-01T10:00:00Z")
    wait_for("the profile", lambda: stack.profile(key))
    wait_for("its tag", lambda: "newsletter-readers" in (stack.profile(key) or {}).get("tags", []))

    stack.http.delete(f"{stack.efficy_url}/_sim/persons/{key}", timeout=10).raise_for_status()
    _webhook(stack, iid, key, "Delete", "2026-04-01T11:00:00Z")
    wait_for("the tombstone", lambda: _state(stack, iid, key).get("last_outcome") == "deleted")

    profile = stack.profile(key)
    if on_delete == "delete":
        assert profile is None
    elif on_delete == "untag":
        assert profile is not None and profile["tags"] == []
    else:
        assert profile is not None and "newsletter-readers" in profile["tags"]
