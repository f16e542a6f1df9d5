"""Accepting an Efficy webhook: authenticate, validate, split into one message per person, enqueue.

This is all the webhook Lambda does, so it answers fast even for batches of thousands of records; the
worker refetches each person from Efficy, so nothing here needs more than the key and the date.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .changes import ContactChange
from .config import IntegrationConfig
from .queue import EnqueueReport, enqueue_changes
from .webhook import CONTACT_TABLE_ID, WebhookPayload, parse, verify


@dataclass
class AcceptResult:
    accepted: int  # person messages now on the queue
    records: int  # contact records in the payload
    skipped_other_tables: int
    enqueue: EnqueueReport


def authenticate(cfg: IntegrationConfig, headers: Mapping[str, str], body: bytes, secret: str) -> None:
    auth = cfg.efficy.auth
    verify(
        headers,
        body,
        secret,
        mode=auth.mode,
        signature_header=auth.signature_header,
        timestamp_header=auth.timestamp_header,
        secret_header=auth.secret_header,
        tolerance_seconds=auth.tolerance_seconds,
    )


def split_by_person(integration_id: str, payload: WebhookPayload) -> tuple[list[ContactChange], int, int]:
    """One message per person: later records of the same person in a batch fold into the first one's slot."""
    now = time.time()
    by_key: dict[int, ContactChange] = {}
    skipped = 0
    contacts = 0
    for record in payload.records:
        if record.table != CONTACT_TABLE_ID:
            skipped += 1
            continue
        contacts += 1
        previous = by_key.get(record.key)
        fields = sorted(set(record.fields) | set(previous.changed_fields if previous else []))
        operation = record.operation
        if previous and previous.operation == "Create" and operation == "Update":
            operation = "Create"
        digest = hashlib.sha256(json.dumps(record.fields, sort_keys=True, default=str).encode())
        if previous:
            digest.update(previous.fingerprint.encode())
        by_key[record.key] = ContactChange(
            integration_id=integration_id,
            person_key=record.key,
            operation=operation,
            date=max(record.date, previous.date) if previous else record.date,
            changed_fields=fields,
            source="webhook",
            received_at=now,
            fingerprint=digest.hexdigest()[:32],
        )
    return list(by_key.values()), contacts, skipped


def accept(
    cfg: IntegrationConfig, queue_url: str, headers: Mapping[str, str], body: bytes, secret: str
) -> AcceptResult:
    """Raises WebhookAuthError, WebhookPayloadError or EnqueueError; the handler maps them to 401/400/503."""
    authenticate(cfg, headers, body, secret)
    payload = parse(body)
    changes, contacts, skipped = split_by_person(cfg.integration_id, payload)
    report = enqueue_changes(queue_url, changes)
    return AcceptResult(accepted=len(changes), records=contacts, skipped_other_tables=skipped, enqueue=report)
