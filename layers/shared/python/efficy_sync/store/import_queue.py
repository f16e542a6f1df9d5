"""The keys import mode's pages queue for the Imports step (fullsync/collect.py gathers them into files).

Item: pk "IMPORTQ#<integration>#<run>", sk "<000000 page>#<000000000 Efficy page>": `keys` (the queued person
keys, delta-encoded and compressed like a query snapshot: keys only, never a person's data), `count`,
`page_size` (to read the Efficy page again) and `expires_at` (TTL, QUEUE_RETENTION_DAYS). Written by each page
of the run, unconditionally (a page run again overwrites its own item).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..aws import client
from .dynamo import key, query_all, to_item
from .query_members import decode_members, encode_members
from .run_records import expires_at

QUEUE_RETENTION_DAYS = 7  # a run's queued keys are read within its run; kept a week for an investigation


@dataclass(frozen=True)
class QueuedPage:
    """The keys one Efficy page queued for import, and where to read them again."""

    page: int
    efficy_page: int
    page_size: int
    keys: tuple[int, ...]


class ImportQueue:
    """Keys queued by the pages of one run (module docstring)."""

    def __init__(self, table_name: str) -> None:
        self._table = table_name

    @staticmethod
    def _pk(integration_id: str, run_id: str) -> str:
        return f"IMPORTQ#{integration_id}#{run_id}"

    def add(self, integration_id: str, run_id: str, entry: QueuedPage) -> None:
        """Idempotent: a page run again overwrites its own item."""
        fields = {
            "page_size": entry.page_size,
            "keys": encode_members(entry.keys),
            "count": len(entry.keys),
            "expires_at": expires_at(days=QUEUE_RETENTION_DAYS),
        }
        item = {**key(self._pk(integration_id, run_id), f"{entry.page:06d}#{entry.efficy_page:09d}"), **to_item(fields)}
        client("dynamodb").put_item(TableName=self._table, Item=item)

    def entries(self, integration_id: str, run_id: str) -> list[QueuedPage]:
        """Every queued page of the run, in page order (so files are contiguous key ranges)."""
        out: list[QueuedPage] = []
        partition = {":pk": self._pk(integration_id, run_id)}
        for item in query_all(self._table, "pk = :pk", partition, consistent=True):
            page, efficy_page = item["sk"].split("#")
            keys = tuple(sorted(decode_members(item["keys"]))) if int(item["count"]) else ()
            out.append(QueuedPage(int(page), int(efficy_page), int(item["page_size"]), keys))
        return out
