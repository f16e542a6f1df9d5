"""Where the blast-radius breaker (safety.py) keeps what it holds back, in the STATE table.

- "HELD#<integration>" / "<person key>": a person whose removals were held (by a full sync that waits for its
  gate, or by a real-time burst). Only the key is kept: the release syncs the person again from Efficy's
  current data, so the newest CRM change decides (a person who joined the profile again is not opted out,
  and a held CRM opt-out is never replaced by an older opt-in). Unlike PARKED# keys, the sweeper never
  re-enqueues these: a full sync whose pages read the person again holds them anew and its gate judges them
  (a halt is confirmed with `efficy-sync full-sync start ID --allow-removals-up-to N`); the rest (a real-time
  burst's, a person Efficy deleted) only an admin's `full-sync start ID --allow-removals` releases.
- "BREAKER#<integration>" / "WINDOW#<n>": removals sent by real-time sync in window n (TTL'd counter): the
  real-time worker's and the opt-out write-back's (beyond the person's own opt-out: optout_gate.py) together;
  "BREAKER#<integration>" / "TRIPPED": the real-time breaker is open (every further removal is held);
  "BREAKER#<integration>" / "BASE": what the integration holds in APSIS (safety.base_counts), written by each
  full sync, the base the real-time threshold is judged against.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from ..aws import client
from ..config import IntegrationConfig
from ..observability import count, logger
from ..safety import PROFILES, limit
from .dynamo import batch_write, from_item, key, query_all, to_item


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class HeldRemovals:
    def __init__(self, table_name: str) -> None:
        self._table = table_name

    def hold(self, integration_id: str, keys: Iterable[int], source: str) -> int:
        """Remembers the keys (idempotent: a retried page holds the same keys again). BatchWriteIncomplete
        when DynamoDB keeps throttling: the step is retried."""
        held_at = _now()
        items = [
            {**key(f"HELD#{integration_id}", str(int(k))), **to_item({"source": source[:200], "held_at": held_at})}
            for k in sorted(set(keys))
        ]
        batch_write(self._table, items)
        return len(items)

    def keys(self, integration_id: str, limit: int | None = None) -> Iterator[int]:
        for item in query_all(self._table, "pk = :pk", {":pk": f"HELD#{integration_id}"}, consistent=True, limit=limit):
            yield int(item["sk"])

    def held_by(self, integration_id: str, source: str) -> Iterator[int]:
        """The keys last held by `source` (a hold again by another source takes them over)."""
        for item in query_all(self._table, "pk = :pk", {":pk": f"HELD#{integration_id}"}, consistent=True):
            if item.get("source") == source[:200]:
                yield int(item["sk"])

    def count(self, integration_id: str) -> int:
        return sum(1 for _ in self.keys(integration_id))

    def forget(self, integration_id: str, keys: Iterable[int]) -> None:
        ddb = client("dynamodb")
        for person_key in keys:
            ddb.delete_item(TableName=self._table, Key=key(f"HELD#{integration_id}", str(person_key)))


class RemovalBreaker:
    """The per-integration real-time breaker items (module docstring)."""

    def __init__(self, table_name: str, clock: Any = time.time) -> None:
        self._table = table_name
        self._clock = clock

    def _key(self, integration_id: str, sk: str) -> dict[str, Any]:
        return key(f"BREAKER#{integration_id}", sk)

    def add(self, integration_id: str, n: int, window_minutes: int) -> int:
        """Adds `n` removals to the current window; returns the window's total (expires two windows later)."""
        seconds = window_minutes * 60
        now = self._clock()
        window = int(now // seconds)
        answer = client("dynamodb").update_item(
            TableName=self._table,
            Key=self._key(integration_id, f"WINDOW#{window}"),
            UpdateExpression="ADD removals :n SET expires_at = :exp",
            ExpressionAttributeValues=to_item({":n": n, ":exp": int(now + 2 * seconds)}),
            ReturnValues="UPDATED_NEW",
        )
        return int(from_item(answer["Attributes"])["removals"])

    def tripped(self, integration_id: str) -> dict[str, Any] | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=self._key(integration_id, "TRIPPED"), ConsistentRead=True)
            .get("Item")
        )
        if not item:
            return None
        return {k: str(v) for k, v in from_item(item).items() if k not in ("pk", "sk")}

    def trip(self, integration_id: str, removals: int, allowed: int) -> None:
        client("dynamodb").put_item(
            TableName=self._table,
            Item={
                **self._key(integration_id, "TRIPPED"),
                **to_item({"tripped_at": _now(), "removals": removals, "limit": allowed}),
            },
        )

    def reset(self, integration_id: str) -> None:
        """An admin confirmed the removals (`full-sync start --allow-removals`): real time may remove again."""
        ddb = client("dynamodb")
        ddb.delete_item(TableName=self._table, Key=self._key(integration_id, "TRIPPED"))
        windows = query_all(
            self._table, "pk = :pk AND begins_with(sk, :w)", {":pk": f"BREAKER#{integration_id}", ":w": "WINDOW#"}
        )
        for item in list(windows):
            ddb.delete_item(TableName=self._table, Key=key(item["pk"], item["sk"]))

    def base(self, integration_id: str) -> dict[str, int]:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=self._key(integration_id, "BASE"), ConsistentRead=True)
            .get("Item")
        )
        if not item:
            return {}
        return {k: int(v) for k, v in from_item(item).get("counts", {}).items()}

    def set_base(self, integration_id: str, counts: Mapping[str, int]) -> None:
        client("dynamodb").put_item(
            TableName=self._table,
            Item={
                **self._key(integration_id, "BASE"),
                **to_item({"counts": {k: int(v) for k, v in counts.items()}, "updated_at": _now()}),
            },
        )


class BurstGate:
    """The real-time breaker (safety.RemovalGate): removals pass while the window's count stays within the
    integration's threshold (of the profiles it holds in APSIS, base from the last full sync); beyond it the
    breaker trips, the removals are held (HELD# keys), `RemovalsHeld` counts them and the `RemovalBreakerTripped`
    metric raises the alarm. It stays tripped until an admin releases (README "Blast-radius breaker")."""

    def __init__(self, cfg: IntegrationConfig, breaker: RemovalBreaker, held: HeldRemovals) -> None:
        self.cfg = cfg
        self.breaker = breaker
        self.held = held

    def admit(self, key: int, removals: list[Any]) -> bool:
        integration_id, safety = self.cfg.integration_id, self.cfg.safety
        if self.breaker.tripped(integration_id) is None:
            base = self.breaker.base(integration_id).get(PROFILES, 0)
            allowed = limit(base, safety.max_removal_percent, safety.min_removals)
            total = self.breaker.add(integration_id, 1, safety.window_minutes)
            if total <= allowed:
                return True
            self.breaker.trip(integration_id, total, allowed)
            count("RemovalBreakerTripped", 1, integration_id=integration_id)
            logger.warning(
                "real-time removal breaker tripped: removals held until released",
                extra={"integration_id": integration_id, "removals": total, "limit": allowed},
            )
        self.held.hold(integration_id, [key], "real-time burst")
        count("RemovalsHeld", 1, integration_id=integration_id)
        return False
