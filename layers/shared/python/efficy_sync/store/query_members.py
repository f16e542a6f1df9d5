"""The last known members of each mapped Efficy query (fullsync/tags.py mirrors them into APSIS One tags).

Items: pk "QUERYTAG#<integration>", sk "TAG#<tag>" (`query`: the query the tag mirrored last), sk "<query>" (the
head: `chunks`, `members`, `run_id`, `updated_at`, `snapshot_id`, and while the sweeper's scheduled mirror of the
query is under way `sweep_next`/`sweep_since`: see `resume_key`) and
sk "<query>#<0000 chunk>" (`data`: a slice of the compressed snapshot). The snapshot is the sorted keys,
delta-encoded and zlib-compressed: a query of a million members is a few hundred kilobytes in a handful of
items. Written by the full sync's Tags step (or the query's own schedule) when it finishes, unconditionally:
chunks first, then the head, so a reader never sees half a snapshot. No TTL.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable
from typing import Any

from ..aws import client
from ..state import utc_now
from .dynamo import from_item, key, to_item

CHUNK_BYTES = 300_000  # stays well under DynamoDB's 400 KB item limit
_PASS = "snapshot_id, sweep_next, sweep_since"  # the head's attributes of the sweeper's pass (resume_key)


def encode_members(keys: Iterable[int]) -> bytes:
    previous = 0
    deltas = []
    for person_key in sorted(set(keys)):
        deltas.append(str(person_key - previous))
        previous = person_key
    return zlib.compress("\n".join(deltas).encode(), 9)


def decode_members(data: bytes) -> set[int]:
    text = zlib.decompress(data).decode()
    members: set[int] = set()
    current = 0
    for delta in filter(None, text.split("\n")):
        current += int(delta)
        members.add(current)
    return members


class QueryMembersStore:
    """Last known members of each mapped query (module docstring)."""

    def __init__(self, table_name: str) -> None:
        self._table = table_name

    @staticmethod
    def _pk(integration_id: str) -> str:
        return f"QUERYTAG#{integration_id}"

    def get(self, integration_id: str, query: int) -> set[int] | None:
        """None when the query never ran (nothing to untag yet)."""
        ddb = client("dynamodb")
        pk = self._pk(integration_id)
        head = ddb.get_item(TableName=self._table, Key=key(pk, str(query)), ConsistentRead=True)
        if "Item" not in head:
            return None
        chunks = int(from_item(head["Item"])["chunks"])
        data = b""
        for i in range(chunks):
            item = ddb.get_item(TableName=self._table, Key=key(pk, f"{query}#{i:04d}"), ConsistentRead=True)["Item"]
            data += from_item(item)["data"]
        return decode_members(data)

    def previous(self, integration_id: str, query: int, tag: str) -> set[int] | None:
        """The members the tag mirrored last: this query's snapshot or, when the tag was pointed at this query
        since (a config change), the snapshot of the query it mirrored before. Without the second, the old
        query's members kept the tag for good (a VIP campaign reaching former VIPs)."""
        alias = client("dynamodb").get_item(
            TableName=self._table, Key=key(self._pk(integration_id), f"TAG#{tag}"), ConsistentRead=True
        )
        before = from_item(alias.get("Item", {})).get("query")
        # the tag's own last query first: this query's snapshot may be another tag's (or an old one of this tag)
        return self.get(integration_id, int(before) if before is not None else query)

    def put(
        self,
        integration_id: str,
        query: int,
        members: set[int],
        *,
        run_id: str,
        tags: Iterable[str] = (),
        widened: bool = False,
    ) -> None:
        """Chunks first, then the head that says how many to read, so a reader never sees half a snapshot; then
        which query each of `tags` mirrors now (for `previous`). A `widened` snapshot (tags.widen_snapshot,
        before any tag goes out) keeps the query's last run: the mirror is not done, and a scheduled mirror that
        ran out of time after widening waited a whole schedule interval (a day) instead of the next sweep."""
        ddb = client("dynamodb")
        pk = self._pk(integration_id)
        # a widening keeps the query's last run and the sweeper's resume key: the mirror under way is not done
        kept = self._head(integration_id, query, f"updated_at, {_PASS}") if widened else {}
        data = encode_members(members)
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        for i, chunk in enumerate(chunks):
            ddb.put_item(TableName=self._table, Item={**key(pk, f"{query}#{i:04d}"), **to_item({"data": chunk})})
        head = {**kept, "chunks": len(chunks), "members": len(members), "run_id": run_id}
        if not widened:  # a snapshot written whole: a new pass over the members (resume_key)
            head.update(updated_at=utc_now(), snapshot_id=uuid.uuid4().hex)
        ddb.put_item(TableName=self._table, Item={**key(pk, str(query)), **to_item(head)})
        for tag in tags:
            ddb.put_item(TableName=self._table, Item={**key(pk, f"TAG#{tag}"), **to_item({"query": query})})

    def _head(self, integration_id: str, query: int, projection: str) -> dict[str, Any]:
        head = client("dynamodb").get_item(
            TableName=self._table,
            Key=key(self._pk(integration_id), str(query)),
            ConsistentRead=True,
            ProjectionExpression=projection,
        )
        return from_item(head.get("Item", {}))

    def last_run(self, integration_id: str, query: int) -> str | None:
        """When the members of `query` were last refreshed (by a full sync or by its schedule)."""
        updated = self._head(integration_id, query, "updated_at").get("updated_at")
        return str(updated) if updated else None

    def resume_key(self, integration_id: str, query: int) -> tuple[int | None, str]:
        """Where the sweeper's scheduled mirror of `query` resumes (its last call's `next`: every member up to
        that key is done; None: from the lowest key), and the pass it belongs to (for `set_resume_key`). A pass
        runs from one snapshot written whole (`put`, not widened: a finished mirror, the full sync's Tags step)
        to the next: a key stored in an earlier pass (`sweep_since`, another `snapshot_id`) is not used."""
        head = self._head(integration_id, query, _PASS)
        snapshot = str(head.get("snapshot_id", ""))
        if "sweep_next" not in head or head.get("sweep_since", "") != snapshot:
            return None, snapshot
        return int(head["sweep_next"]), snapshot

    def set_resume_key(self, integration_id: str, query: int, after: int, *, snapshot: str) -> bool:
        """Stores `after` as the query's resume key in the pass `snapshot` (resume_key's, read when the sweep
        began); refused (False) when no snapshot names the query's members yet or one was written whole since
        (its new pass starts from the lowest key)."""
        ddb = client("dynamodb")
        same = "snapshot_id = :since" if snapshot else "attribute_not_exists(snapshot_id)"
        try:
            ddb.update_item(
                TableName=self._table,
                Key=key(self._pk(integration_id), str(query)),
                UpdateExpression="SET sweep_next = :next, sweep_since = :since",
                ConditionExpression=f"attribute_exists(chunks) AND {same}",
                ExpressionAttributeValues=to_item({":next": after, ":since": snapshot}),
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True
