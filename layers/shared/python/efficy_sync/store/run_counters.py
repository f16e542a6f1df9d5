"""Counting a run's progress exactly once: the run's counters, the pages counted, page records.

A step Step Functions runs again after a lost reply, or a page run twice, must not count twice: each count is
one conditional update of the run item that also records what was counted. `RunStore` inherits these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..aws import client
from .dynamo import attr, query_all, to_item
from .run_records import (
    ACTIVE,
    COUNTER_PREFIX,
    TTL_ATTRIBUTE,
    PageRecord,
    _lock_key,
    _page_key,
    _run_key,
    expires_at,
    utc_now,
)


class RunCounters:
    """The counting half of `RunStore` (which sets `_table`)."""

    _table: str

    @staticmethod
    def _counter_update(counters: Mapping[str, int]) -> tuple[str, dict[str, str], dict[str, Any]] | None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        parts = []
        for i, (name, value) in enumerate(sorted(counters.items())):
            if not value:
                continue
            names[f"#c{i}"] = COUNTER_PREFIX + name
            values[f":c{i}"] = attr(value)
            parts.append(f"#c{i} :c{i}")
        if not parts:
            return None
        return "ADD " + ", ".join(parts), names, values

    def add_once(self, integration_id: str, run_id: str, token: str, counters: Mapping[str, int]) -> bool:
        """Like `add`, but only the first call with `token` counts (a step Step Functions runs again after a
        lost reply must not count twice). The tokens are kept in a string set beside the counted pages."""
        return bool(counters) and self._add_counted(integration_id, run_id, "tokens_counted", token, counters)

    def _add_counted(
        self, integration_id: str, run_id: str, counted: str, token: str, counters: Mapping[str, int]
    ) -> bool:
        """Adds `counters` unless the string set `counted` already holds `token`, and records it there: one
        conditional update of one item, so no transaction is needed. False when it was counted before."""
        update = self._counter_update(counters)
        if update is None:
            return False
        expression, names, values = update
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_run_key(integration_id, run_id),
                UpdateExpression=f"{expression}, #counted :token_set",
                ConditionExpression="attribute_exists(pk) AND NOT contains(#counted, :token)",
                ExpressionAttributeNames={**names, "#counted": counted},
                ExpressionAttributeValues={**values, **to_item({":token_set": {token}, ":token": token})},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # ---- pages --------------------------------------------------------------------------------------
    def page_done(self, integration_id: str, run_id: str, page: int, persons: int, counters: Mapping[str, int]) -> bool:
        """Add the page's counters to the run, once: False when the page was already counted (Step Functions may
        run a page again after a lost reply)."""
        counts = {**counters, "pages_done": 1}
        if not self._add_counted(integration_id, run_id, "pages_counted", str(page), counts):
            return False
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_page_key(integration_id, run_id, page),
            UpdateExpression=f"SET #st = :done, persons = :persons, done_at = :now, {TTL_ATTRIBUTE} = :ttl "
            "ADD attempts :one",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=to_item(
                {":done": "done", ":persons": persons, ":now": utc_now(), ":one": 1, ":ttl": expires_at()}
            ),
        )
        return True

    def page_stopped(
        self, integration_id: str, run_id: str, page: int, persons: int, counters: Mapping[str, int]
    ) -> bool:
        """A page that stopped part-way because its run ended (a cancel, a timeout): what it did before it stopped
        is added to the run, once (the report of a cancelled run counts every person a page wrote), but the page
        is not done. False when the page was already counted."""
        if not self._add_counted(integration_id, run_id, "pages_counted", str(page), dict(counters)):
            return False
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_page_key(integration_id, run_id, page),
            UpdateExpression=f"SET #st = :stopped, persons = :persons, {TTL_ATTRIBUTE} = :ttl ADD attempts :one",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=to_item(
                {":stopped": "stopped", ":persons": persons, ":one": 1, ":ttl": expires_at()}
            ),
        )
        return True

    def page_failed(self, integration_id: str, run_id: str, page: int, error: str) -> None:
        """Count a failed attempt; Step Functions decides whether it runs the page again."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_page_key(integration_id, run_id, page),
                UpdateExpression=f"SET #st = :failing, last_error = :err, failed_at = :now, {TTL_ATTRIBUTE} = :ttl "
                "ADD attempts :one",
                ConditionExpression="attribute_not_exists(pk) OR #st <> :done",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=to_item(
                    {
                        ":failing": "failing",
                        ":done": "done",
                        ":err": error[:1000],
                        ":now": utc_now(),
                        ":one": 1,
                        ":ttl": expires_at(),
                    }
                ),
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return  # a later attempt already finished it

    def pages(self, integration_id: str, run_id: str) -> dict[int, PageRecord]:
        records: dict[int, PageRecord] = {}
        partition = {":pk": f"FULLSYNC#{integration_id}#{run_id}"}
        for plain in query_all(self._table, "pk = :pk", partition, consistent=True):
            number = int(plain["sk"].split("#", 1)[1])
            records[number] = PageRecord(
                page=number,
                status=plain.get("status", ""),
                attempts=int(plain.get("attempts", 0)),
                persons=int(plain.get("persons", 0)),
                last_error=plain.get("last_error"),
            )
        return records

    # ---- parking support ------------------------------------------------------------------------------
    def lock_condition(self, integration_id: str, run_id: str) -> dict[str, Any]:
        """A TransactWriteItems ConditionCheck: the run still holds the integration's lock."""
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": _lock_key(integration_id),
                "ConditionExpression": "run_id = :rid AND #st = :running",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": to_item({":rid": run_id, ":running": ACTIVE}),
            }
        }

    def counter_update(self, integration_id: str, run_id: str, counters: Mapping[str, int]) -> dict[str, Any]:
        """A TransactWriteItems Update that adds to the run's counters."""
        update = self._counter_update(counters)
        assert update is not None
        expression, names, values = update
        return {
            "Update": {
                "TableName": self._table,
                "Key": _run_key(integration_id, run_id),
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
