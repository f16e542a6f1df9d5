"""A contact's own Delete in a webhook stays a Delete whatever relation record of the same person comes with it
(WebhookRecord.via_relation: "it never replaces the operation of the contact's own record in the same call"). A
relation record dated after the Delete (Efficy cascading the delete to the CRM-profile relation a second later)
and placed first turned it into an Update; parking counts deletes by the operation, and the full sync's Seams
step is sized by that count (fullsync/seams.py): a person a delete pushed across a page boundary went unsynced."""

from __future__ import annotations

import json
from typing import Any

from efficy_sync.config import RelationTable
from efficy_sync.ingest import split_by_person
from efficy_sync.webhook import parse

PROF_TABLE = 11123
RULE = RelationTable(table=PROF_TABLE, key_part="first")


def body(*records: dict[str, Any]) -> bytes:
    return json.dumps({"database": "crm", "records": list(records)}).encode()


def test_a_relation_record_dated_after_the_contacts_delete_does_not_turn_the_delete_into_an_update() -> None:
    # Efficy deletes the contact, then (cascade) its CRM-profile relation, stamped a second later
    deleted = {"table": 11000, "key": 5, "operation": "Delete", "fields": None, "date": "2026-01-01T10:00:00Z"}
    left = {"table": PROF_TABLE, "key": "5_12", "operation": "Delete", "fields": None, "date": "2026-01-01T10:00:01Z"}
    for records in ((deleted, left), (left, deleted)):
        (change,), _, _ = split_by_person("acme", parse(body(*records), [RULE]))
        assert change.operation == "Delete", [r["table"] for r in records]
