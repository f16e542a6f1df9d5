"""`efficy-sync health ID [--retry CATEGORY] [--skipped] [--scan] [--check-data] [--format text|json]`.

Reads the failed persons from the state table's sparse health index (never a scan: the cost follows the
failures, not the stored persons; `--skipped` adds the persons skipped by design) and peeks at the
contact-changes DLQ. `--scan` reads every stored state instead, to count them and to index states stored
before the index existed (run it once per integration after that upgrade); with `--check-data` it also
refetches the synced persons from Efficy to find missing or invalid e-mails and phone numbers. `--retry CATEGORY` (or `--retry failures`) puts a Resync change for each person of that category on
the contact-changes queue, once the cause is fixed; dead-lettered persons' DLQ messages are then removed.
Exits 6 (EXIT_FOUND) when the report shows failing persons or dead-letter messages (`exit_code`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from efficy_sync_tools.commands._args import non_negative_int, positive_int
from efficy_sync_tools.commands._aws import EXIT_FOUND, EXIT_OK, EXIT_USAGE, CliError, cli_command

if TYPE_CHECKING:
    from efficy_sync.config import IntegrationConfig
    from efficy_sync.health import Finding, HealthReport
    from efficy_sync.state import PersonState

#: persons refetched from Efficy per call with --check-data
DATA_CHUNK = 100
#: the categories --check-data finds (a retry of one of them refetches the data first)
DATA_CATEGORIES = frozenset({"missing_email", "missing_mobile", "invalid_email", "invalid_phone", "invalid_value"})


def register(sub: argparse._SubParsersAction) -> None:
    health = sub.add_parser("health", help="sync failures by category, with the persons affected; --retry them")
    health.add_argument("integration_id", metavar="ID")
    health.add_argument(
        "--retry",
        metavar="CATEGORY",
        help="re-queue the persons of this category (e.g. rejected_value, permission, dead_lettered), or of every "
        "failure category with 'failures', after the cause is fixed",
    )
    health.add_argument(
        "--check-data",
        action="store_true",
        help="also refetch synced persons from Efficy to find missing or invalid e-mails and phone numbers "
        "(one Efficy call per 100 persons)",
    )
    health.add_argument(
        "--skipped", action="store_true", help="also list the persons skipped by design (sync conditions, no key)"
    )
    health.add_argument(
        "--scan",
        action="store_true",
        help="read every stored person (counts them; indexes states stored before the health index existed)",
    )
    health.add_argument("--format", choices=("text", "json"), default="text")
    health.add_argument(
        "--limit", type=non_negative_int, default=20, help="person keys shown per category in text (0: all)"
    )
    health.add_argument("--dlq-peek", type=positive_int, default=1000, help="at most this many DLQ messages are read")
    health.set_defaults(func=health_command)


@dataclass
class DeadLetters:
    """The integration's messages in the contact-changes DLQ, held invisible until released or deleted."""

    sqs: Any
    url: str
    persons: dict[int, list[str]] = field(default_factory=dict)  # person key -> receipt handles
    held: list[str] = field(default_factory=list)  # every receipt handle, this integration's or not

    def release(self) -> None:
        """Makes every held message visible again (for the workers, a redrive, the next health check)."""
        self._batch("change_message_visibility_batch", self.held, VisibilityTimeout=0)
        self.held = []

    def delete(self, keys: list[int]) -> int:
        handles = [h for k in keys for h in self.persons.get(k, [])]
        self._batch("delete_message_batch", handles)
        gone = set(handles)
        self.held = [h for h in self.held if h not in gone]
        return len(handles)

    def _batch(self, operation: str, handles: list[str], **extra: Any) -> None:
        for start in range(0, len(handles), 10):
            entries = [{"Id": str(i), "ReceiptHandle": h, **extra} for i, h in enumerate(handles[start : start + 10])]
            getattr(self.sqs, operation)(QueueUrl=self.url, Entries=entries)


def peek_dead_letters(integration_id: str, limit: int, hold_seconds: int = 60) -> tuple[DeadLetters | None, dict]:
    """Reads (without removing) up to `limit` DLQ messages; returns this integration's and every DLQ's depth.

    FIFO hands out one message per group at a time, i.e. one per person: enough to name them. The messages
    stay invisible for at most `hold_seconds` if this process dies before it releases them."""
    from efficy_sync.aws import client
    from efficy_sync.changes import ContactChange

    from efficy_sync_tools.commands.dlq import QUEUES, _urls

    sqs = client("sqs")
    depths: dict[str, int] = {}
    urls: dict[str, str] = {}
    for name in QUEUES:
        try:
            _, urls[name] = _urls(name)
        except CliError as exc:  # no such queue in this deployment (no output for it): nothing to count
            print(f"efficy-sync: {name} dead-letter queue not found ({exc}); not counted", file=sys.stderr)
            continue
        # anything else (access denied, throttled, out of reach) is raised: the exit code says the DLQs are empty
        # only when they were read (exit_code), so a queue that could not be read never passes for an empty one
        dlq = urls[name]
        attrs = sqs.get_queue_attributes(
            QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        depths[name] = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
    if "contact" not in urls:
        return None, depths
    letters = DeadLetters(sqs, urls["contact"])
    if not depths.get("contact"):
        return letters, depths
    try:
        while len(letters.held) < limit:
            messages = sqs.receive_message(
                QueueUrl=letters.url,
                MaxNumberOfMessages=min(10, limit - len(letters.held)),
                WaitTimeSeconds=0,
                VisibilityTimeout=hold_seconds,
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                letters.held.append(message["ReceiptHandle"])
                try:
                    change = ContactChange.model_validate_json(message["Body"])
                except ValueError:
                    continue  # a poison message: `dlq redrive` or the logs are the way to look at it
                if change.integration_id == integration_id:
                    letters.persons.setdefault(change.person_key, []).append(message["ReceiptHandle"])
    except BaseException:
        letters.release()
        raise
    return letters, depths


def data_problems(cfg: IntegrationConfig, states: list[PersonState]) -> list[Finding]:
    """Refetches the synced persons from Efficy and maps them again, as the worker would."""
    from efficy_sync.health import data_findings
    from efficy_sync.mapping import Desired, map_person, needed_fields

    from efficy_sync_tools.commands._aws import efficy_client

    keys = [int(s.person_key) for s in states if s.exists_in_apsis and s.last_outcome == "synced"]
    findings: list[Finding] = []
    fields = needed_fields(cfg)
    with efficy_client(cfg) as efficy:
        for start in range(0, len(keys), DATA_CHUNK):
            persons = efficy.get_persons(keys[start : start + DATA_CHUNK], fields)
            for key, person in persons.items():
                result = map_person(cfg, person)
                if isinstance(result, Desired):
                    findings.extend(data_findings(key, result))
    return findings


def exit_code(report: HealthReport) -> int:
    """EXIT_FOUND when the report shows what needs an operator, so a schedule can alert on the code alone (as on
    reconcile's drift): a failing person of the integration (dead-lettered ones included), or a message in any of
    the stack's dead-letter queues (their depths are the stack's, whichever integration a message is of; each
    needs a redrive or a retry). Data problems and persons skipped by design are no failure: 0 for them."""
    dead_letters = any(depth > 0 for depth in report.dead_letter_queues.values())
    return EXIT_FOUND if report.failing() or dead_letters else EXIT_OK


@cli_command
def health_command(args: argparse.Namespace) -> int:
    from efficy_sync.health import CATEGORIES, RETRY_ALL, build_report, render_health
    from efficy_sync.store.configs import ConfigStore
    from efficy_sync.store.persons import PersonStateStore

    from efficy_sync_tools.commands._aws import setup_library_env, table_names
    from efficy_sync_tools.commands.config import live_config

    retry = args.retry
    if retry is not None and retry != RETRY_ALL and retry not in CATEGORIES:
        names = ", ".join([RETRY_ALL, *(n for n, c in CATEGORIES.items() if c.kind != "skipped")])
        raise CliError(f"unknown category {retry!r} for --retry; one of: {names}", EXIT_USAGE)
    setup_library_env()
    config_table, state_table = table_names()
    cfg = live_config(ConfigStore(config_table), args.integration_id)

    store = PersonStateStore(state_table)
    check_data = args.check_data or retry in DATA_CATEGORIES
    scan = args.scan or check_data  # the data check needs every synced person
    if args.scan:
        fixed = store.reindex(cfg.integration_id)
        if fixed:
            print(f"efficy-sync: indexed {fixed:,} stored state(s) the health index lacked", file=sys.stderr)
    if scan:
        states = store.scan(cfg.integration_id)
    else:
        states = store.issues(cfg.integration_id, ("failure", "skipped") if args.skipped else ("failure",))
    data = data_problems(cfg, states) if check_data else []
    letters, depths = peek_dead_letters(cfg.integration_id, max(0, args.dlq_peek))
    try:
        report = build_report(
            cfg.integration_id,
            states,
            data=data,
            dead_lettered=sorted(letters.persons) if letters else [],
            dead_letter_queues=depths,
            data_checked=check_data,
            counted=scan,
            skipped_listed=args.skipped,
        )
        retried = _retry(cfg.integration_id, report.persons_in(retry), letters) if retry else None
    finally:
        if letters is not None:
            letters.release()

    if args.format == "json":
        out = report.to_dict()
        if retried is not None:
            out["retried"] = {"category": retry, **retried}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(render_health(report, limit=args.limit))
        if retried is not None:
            print()
            print(
                f"re-queued {retried['persons']:,} person(s) of {retry} for a resync"
                + (
                    f"; removed {retried['dlq_messages_removed']:,} DLQ message(s)"
                    if retried["dlq_messages_removed"]
                    else ""
                )
            )
    sys.stdout.flush()
    return exit_code(report)  # the report as printed: persons a --retry re-queued fail until the worker syncs them


def _retry(integration_id: str, keys: list[str], letters: DeadLetters | None) -> dict[str, int]:
    """Resync changes first, then (they are on the queue) the dead letters of the same persons go."""
    from efficy_sync.health import retry_changes
    from efficy_sync.queue import enqueue_changes
    from efficy_sync.settings import settings

    changes = retry_changes(integration_id, keys)
    if changes:
        enqueue_changes(settings().contact_queue_url, changes)
    removed = letters.delete([c.person_key for c in changes]) if letters is not None and changes else 0
    return {"persons": len(changes), "dlq_messages_removed": removed}
