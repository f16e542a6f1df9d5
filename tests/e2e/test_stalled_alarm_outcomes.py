"""IntegrationSyncStalledAlarm weighs the webhooks accepted for an integration against the changes processed for
it. It counted only PersonsSynced / PersonsSkipped: a webhook for an edit of a field the integration does not map
is processed fine (the worker refetches, nothing to send: result "unchanged") and published neither, so three
hours of such edits raised "webhooks arrive, but nothing syncs" although nothing failed. Every outcome but a
failure now counts PersonsProcessed, which the alarm reads."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.pii import hash_key

from tests.support import Stack, person, unique_key, wait_for

pytestmark = pytest.mark.xdist_group("loud_stack")


def _lines(stack: Stack, offset: int) -> list[dict[str, Any]]:
    return stack.json_log_lines(offset)


def _per_integration(lines: list[dict[str, Any]], name: str) -> float:
    return sum(
        sum(line.get(name, [0])) if isinstance(line.get(name), list) else float(line.get(name, 0))
        for line in lines
        if "_aws" in line and line.get("integration_id") == "demo" and name in line
    )


def test_a_processed_webhook_counts_towards_the_stalled_alarm(loud_stack: Stack) -> None:
    stack = loud_stack
    key = unique_key() + 7
    stack.seed([person(key)])
    stack.edit(key, FIRSTNAME="Before")  # a mapped field: synced
    wait_for("the first sync", lambda: stack.profile(key), timeout=30)
    h = hash_key(key)
    wait_for(
        "the first 'person applied'",
        lambda: any(line.get("person") == h and line.get("message") == "person applied" for line in _lines(stack, 0)),
        timeout=30,
    )
    offset = stack.log_path.stat().st_size
    stack.edit(key, JOBTITLE="Engineer")  # a field this integration does not map: processed, nothing to send

    def applied() -> list[dict[str, Any]]:
        return [
            line
            for line in _lines(stack, offset)
            if line.get("person") == h and line.get("message") == "person applied"
        ]

    wait_for("the second 'person applied'", lambda: applied(), timeout=30)
    wait_for(
        "the webhook's EMF", lambda: _per_integration(_lines(stack, offset), "WebhookRecordsAccepted") >= 1, timeout=15
    )

    # the apply's EMF: its per-integration document (PersonsProcessed), then the deployment's (EfficyCalls), printed
    # after its 'person applied' line. Any EfficyCalls line after `offset` could be the FIRST apply's, whose two
    # documents `offset` may fall between: the second apply's EMF not yet printed, PersonsProcessed read as 0
    def second_apply_emf() -> bool:
        lines = _lines(stack, offset)
        at = next(
            (i for i, line in enumerate(lines) if line.get("person") == h and line.get("message") == "person applied"),
            None,
        )
        return at is not None and any("_aws" in line and "EfficyCalls" in line for line in lines[at + 1 :])

    wait_for("the second apply's EMF", second_apply_emf, timeout=15)
    lines = _lines(stack, offset)
    result = applied()[0]["result"]
    webhooks = _per_integration(lines, "WebhookRecordsAccepted")
    processed = _per_integration(lines, "PersonsProcessed")
    assert webhooks >= 1
    assert any("EfficyCalls" in line for line in lines if "_aws" in line)  # the apply invocation's EMF was flushed
    # the alarm's expression over this window: IF(webhooks > 0 AND processed == 0, 1, 0)
    assert processed >= 1, (
        f"webhook record accepted and the person processed (result {result!r}, no failure), "
        f"but PersonsProcessed for the integration = {processed}: IntegrationSyncStalledAlarm's "
        "'nothing syncs' datapoint"
    )
