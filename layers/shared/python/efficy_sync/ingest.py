"""Accepting an Efficy webhook: authenticate, validate, split into one message per person, enqueue.

This is all the webhook Lambda does, so it answers fast even for batches of thousands of records (above a
threshold the messages travel in a few bundles and are split onto the FIFO queue after the 202: bundles.py). The worker
refetches each person from Efficy and uses only the integration, the person key and the operation of a message,
so a message carries nothing else of the record: its size is bounded whatever Efficy sends (MAX_MESSAGE_BYTES,
checked before anything is queued). A replayed or retried call is harmless: the FIFO de-duplication id drops
a copy within five minutes, and any later copy only costs a refetch.

A contact record that cannot be read does not cost the batch (webhook.py): it is skipped, counted
(WebhookRecordsInvalid) and logged with its place in the batch, its hashed key and the problem, never a value.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .bundles import send_bundles
from .changes import ContactChange
from .config import IntegrationConfig
from .correlation import new_id, record_id
from .observability import count, logger
from .pii import hash_key
from .queue import EnqueueReport, enqueue_changes
from .webhook import CONTACT_TABLE_ID, WebhookPayload, WebhookPayloadError, parse
from .webhook_auth import verify

#: Bytes one queued message may take. Every part is bounded (id <= 64, key <= 16 digits, date <= 24, hashes),
#: so a message is about 300 bytes; ten of them stay far below SendMessageBatch's request limit.
MAX_MESSAGE_BYTES = 1024
#: Invalid records logged one line each per call; the rest only in the count (a broken export of thousands of
#: records must not write thousands of lines).
MAX_INVALID_LOGGED = 20


@dataclass(frozen=True)
class BundlePolicy:
    """When a webhook's changes travel in bundles (settings: WEBHOOK_BUNDLE_QUEUE_URL and the two limits)."""

    queue_url: str
    over: int  # more persons than this: bundled
    max_bytes: int  # one bundle message at most


@dataclass
class AcceptResult:
    accepted: int  # person changes now on a queue (the FIFO queue, or the bundle queue to be split onto it)
    records: int  # contact records in the payload
    skipped_other_tables: int
    enqueue: EnqueueReport
    changes: list[ContactChange] = field(default_factory=list)  # what was queued, with their correlation ids
    bundled: bool = False  # the changes went to the bundle queue (efficy_sync.bundles); the splitter logs each
    skipped_invalid: int = 0  # contact records (or records of an unreadable table) that could not be read
    relations: int = 0  # records of a configured relation table, read as updates of the contacts they name
    relations_unread: int = 0  # ... and those that named no contact


def authenticate(
    cfg: IntegrationConfig,
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    query: Mapping[str, str] | None = None,
) -> None:
    auth = cfg.efficy.auth
    verify(
        headers,
        body,
        secret,
        mode=auth.mode,
        query=query,
        signature_header=auth.signature_header,
        timestamp_header=auth.timestamp_header,
        secret_header=auth.secret_header,
        tolerance_seconds=auth.tolerance_seconds,
    )


def split_by_person(integration_id: str, payload: WebhookPayload) -> tuple[list[ContactChange], int, int]:
    """One message per person: later records of the same person in a batch fold into the first one's slot.

    Dates are compared as instants (they are normalised to UTC by the payload model); an absent date ("") never
    wins over a present one: the worker orders by the D_CHANGE it refetches.
    Every fingerprint takes a value drawn for this call. Two real edits of one person can carry the same date (to
    the second) and the same changed values (`fields: {}` for a relation change, such as leaving a CRM profile),
    and SQS drops a second message with the same de-duplication id for five minutes, even after the first was
    processed: if the worker read the person between the two edits, the second (an opt-out, say) was lost. A
    call Efficy retries therefore costs one more refetch, which changes nothing; our own retries of a send
    within this call keep their ids, so SQS still drops those copies. Raises WebhookPayloadError naming the record if its
    message would be over MAX_MESSAGE_BYTES."""
    now = time.time()
    call = secrets.token_hex(8)
    by_key: dict[int, ContactChange] = {}
    own: set[int] = set()  # persons whose operation a record of their own (not a relation record) gave
    skipped = payload.other_tables
    contacts = 0
    for index, record in enumerate(payload.records):
        if record.table != CONTACT_TABLE_ID:
            skipped += 1
            continue
        contacts += 1
        previous = by_key.get(record.key)
        operation = record.operation
        if previous and record.via_relation:
            operation = previous.operation  # a relation record says the person changed, not how
        elif previous and record.key not in own:
            pass  # the contact's own record says how, whatever a relation record before it was dated (a cascade)
        elif previous and (record.date or "") < previous.date:
            operation = previous.operation  # the newest record says what happened last, not the array's order
        elif previous and previous.operation == "Create" and operation == "Update":
            operation = "Create"
        digest = hashlib.sha256(json.dumps(record.fields, sort_keys=True, default=str).encode())
        digest.update(f"call:{call}".encode())
        if previous:
            digest.update(previous.fingerprint.encode())
        date = record.date or ""
        change = ContactChange(
            integration_id=integration_id,
            person_key=record.key,
            operation=operation,
            date=max(date, previous.date) if previous else date,
            source="webhook",
            received_at=now,
            fingerprint=digest.hexdigest()[:32],
        )
        if len(change.model_dump_json().encode()) > MAX_MESSAGE_BYTES:
            raise WebhookPayloadError(f"records[{index}]: too large to queue (over {MAX_MESSAGE_BYTES} bytes)")
        by_key[record.key] = change
        if not record.via_relation:
            own.add(record.key)
    return list(by_key.values()), contacts, skipped


def accept(
    cfg: IntegrationConfig,
    queue_url: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    query: Mapping[str, str] | None = None,
    request_id: str | None = None,
    bundles: BundlePolicy | None = None,
) -> AcceptResult:
    """Raises WebhookAuthError, WebhookPayloadError or EnqueueError; the handler maps them to 401/400/503.

    Each queued person gets the correlation id `<request_id>/<n>` (efficy_sync.correlation): one id per
    change, which also names the webhook call it came in. With `bundles`, a webhook of more persons than its
    threshold is queued in bundles (efficy_sync.bundles) after the same checks."""
    authenticate(cfg, headers, body, secret, query)
    payload = parse(body, cfg.efficy.relation_tables)
    report_invalid(payload)
    report_tables(payload)
    changes, contacts, skipped = split_by_person(cfg.integration_id, payload)
    request = request_id or new_id("webhook-")
    for n, change in enumerate(changes, start=1):
        change.correlation_id = record_id(request, n)
    bundled = False
    if bundles is not None and bundles.queue_url and len(changes) > bundles.over:
        report, bundled = send_bundles(bundles.queue_url, changes, max_bytes=bundles.max_bytes), True
    else:
        report = enqueue_changes(queue_url, changes)
    return AcceptResult(
        accepted=len(changes),
        records=contacts,
        skipped_other_tables=skipped,
        enqueue=report,
        changes=changes,
        bundled=bundled,
        skipped_invalid=len(payload.invalid),
        relations=payload.relations,
        relations_unread=sum(payload.relations_unread.values()),
    )


def report_tables(payload: WebhookPayload) -> None:
    """Say which tables' records were ignored (by id: a relation table to configure shows here), and count the
    records of a configured relation table that named no contact (their change waits for the next full sync)."""
    if payload.ignored_tables:
        logger.info("webhook records of other tables ignored", extra={"tables": _by_table(payload.ignored_tables)})
    if payload.relations_unread:
        unread = sum(payload.relations_unread.values())
        count("WebhookRelationsUnread", unread)
        logger.warning(
            "webhook relation records without a contact key: their persons are not read again until a full sync",
            extra={"tables": _by_table(payload.relations_unread)},
        )


def _by_table(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(table): n for table, n in sorted(counts.items())}


def report_invalid(payload: WebhookPayload) -> None:
    """Count and log the records `parse` set aside: a person's key only hashed, the problem naming fields only
    (parse never puts a value in it), so the lines carry no personal data."""
    if not payload.invalid:
        return
    count("WebhookRecordsInvalid", len(payload.invalid))
    for item in payload.invalid[:MAX_INVALID_LOGGED]:
        person = hash_key(item.key) if item.key is not None else None
        logger.warning("webhook record skipped", extra={"record": item.index, "person": person, "reason": item.reason})
    logger.warning(
        "webhook records skipped",
        extra={"invalid": len(payload.invalid), "logged": min(len(payload.invalid), MAX_INVALID_LOGGED)},
    )
