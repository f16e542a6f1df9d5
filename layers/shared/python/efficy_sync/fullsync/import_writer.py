"""Bulk-import write mode: a page's changes go to APSIS One as one CSV import instead of per-person calls.

The same diff decides what changes (so unchanged persons are not in the file at all); the import only carries
what its format can say safely, and everything else takes the per-person path:
- cleared attributes (an empty cell leaves an attribute unchanged in an import), profile deletions;
- consents without an address to attach them to;
- an opt-in after an opt-out: the import never resubscribes (`resubscribe_if_opted_out: false`), so a
  re-opt-in that the consent rules allow is sent explicitly, person by person.
Imports are limited (3 in flight, 10 requests a minute per account), so a page with only a few changes also
uses per-person calls; rows the import reports as failed are retried person by person too.

Consent layout (APSIS's own Magento module; contracts/apsis-one.md §9): one CSV column per topic, headed by
the topic discriminator, a cell of `1` where the mapping applies and empty elsewhere. The consent type is
fixed per mapping, so opt-ins and opt-outs travel in separate imports, and a topic mapped on both channels
gets one import per channel (one column cannot say "e-mail yes, SMS no"). The first import of a chunk also
carries the attributes and tags of every row; the others carry only the rows with a consent of their kind.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..clients.apsis import CHANNELS, MAX_IMPORT_FILE_BYTES, _redact
from ..clients.errors import ApsisUnavailable, RateLimited, RejectedValue
from ..config import IntegrationConfig
from ..mapping import Desired, map_person
from ..observability import logger
from ..person_plan import (
    CreateProfile,
    Operation,
    PatchAttributes,
    PatchTags,
    SetConsent,
    plan_operations,
)
from ..safety import split_removals
from ..state import PersonState, consent_key, utc_now
from ..state_updates import apply_operations, email_needs_check, stamp_opt_ins
from ..store.persons import StaleWrite
from ..store.protocols import PersonStates
from ..sync import Outcome, reconcile_sent
from .import_report import IMPORT_COMPLETED, IMPORT_FAILED, IMPORT_PENDING, failed_rows, report_of

IMPORT_MIN_ROWS = 50  # fewer changed persons than this on a page: per-person calls are cheaper than an import
MAX_ROWS_PER_FILE = 5000
KEY_COLUMN = "profile_key"
ADDRESS_COLUMNS = {"email": "email", "sms": "mobile"}
CONSENT_CELL = "1"  # applies the mapping's type; an empty cell applies nothing (APSIS's layout never writes 0)
VERSIONS_TTL = 300.0
MAX_POLL_INTERVAL = 15.0  # seconds between two status polls of one long import

_versions_lock = threading.Lock()
_versions: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}


@dataclass
class _Row:
    person: dict[str, Any]
    desired: Desired
    state: PersonState | None
    ops: list[Operation]

    @property
    def key(self) -> int:
        return int(self.person["K_CONTACT"])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class ImportWriter:
    def __init__(
        self,
        cfg: IntegrationConfig,
        apsis: Any,
        states: PersonStates,
        *,
        min_rows: int = IMPORT_MIN_ROWS,
        poll_interval: float = 0.2,
        timeout: float = 180.0,
        hold_removals: bool = False,
    ) -> None:
        """`hold_removals`: the breaker holds this run's removals, so a person with one takes the per-person
        path (where the breaker sees it) instead of the import."""
        self.cfg = cfg
        self.hold_removals = hold_removals
        self.apsis = apsis
        self.states = states
        self.min_rows = min_rows
        self.poll_interval = poll_interval
        self.timeout = timeout  # for all of a chunk's imports together (_run): each anew outlived the Lambda
        self._deadline: float | None = None
        #: a file was (or may have been) uploaded: APSIS may apply it even if we never see it report back
        self.uploaded = False
        self._counters: Counter[str] = Counter()

    def take_counters(self) -> Counter[str]:
        counters, self._counters = self._counters, Counter()
        return counters

    def split(
        self, persons: list[dict[str, Any]], known: dict[int, PersonState]
    ) -> tuple[list[_Row], list[dict[str, Any]]]:
        """The persons whose changes an import can carry (as rows), and the others: the per-person path, which
        costs an unchanged person no APSIS call and no write."""
        rows: list[_Row] = []
        others: list[dict[str, Any]] = []
        for person in persons:
            if any(c.field not in person for c in self.cfg.sync_conditions):
                others.append(person)  # not judged on a missing field: the per-person path refuses it
                continue
            state = known.get(int(person["K_CONTACT"]))
            desired = map_person(self.cfg, person)
            if isinstance(desired, Desired):
                ops = plan_operations(desired, state)
                if ops and self._importable(desired, state, ops):
                    rows.append(_Row(person, desired, state, ops))
                    continue
            others.append(person)
        return rows, others

    def import_rows(self, rows: list[_Row]) -> set[int]:
        """Imports `rows` as one file per kind (the caller sizes the file); the keys of the rows that failed."""
        return self._import(rows) if rows else set()

    def write(
        self,
        persons: list[dict[str, Any]],
        known: dict[int, PersonState],
        sync_many: Callable[[list[dict[str, Any]]], list[Outcome]],
    ) -> list[Outcome]:
        """Outcomes in the order of `persons`; `sync_many` is the per-person path (PersonSyncer)."""
        rows, others = self.split(persons, known)
        if len(rows) < self.min_rows:
            others, rows = persons, []
        outcomes: dict[int, Outcome] = {}
        for start in range(0, len(rows), MAX_ROWS_PER_FILE):
            chunk = rows[start : start + MAX_ROWS_PER_FILE]
            self.uploaded = False  # this chunk's files only
            try:
                failed = self._import(chunk)
            except Exception:
                if self.uploaded:  # APSIS may apply the file later: what it carries must not be known to nobody
                    self._unconfirmed(chunk)
                raise
            for row in chunk:
                if row.key in failed:
                    others.append(row.person)
                else:
                    outcomes[row.key] = self._store(row)
        if others:
            for person, outcome in zip(others, sync_many(others), strict=True):
                outcomes[int(person["K_CONTACT"])] = outcome
        return [outcomes[int(p["K_CONTACT"])] for p in persons]

    def _unconfirmed(self, rows: list[_Row]) -> None:
        """Marks what an import that never reported back sent (collect.Collector._unconfirmed says why); a
        failure here is logged and never hides the import's own error, which the caller raises."""
        now = utc_now()
        try:
            for row in rows:
                reconcile_sent(self.states, self.cfg.integration_id, row.key, row.ops, now, unconfirmed=True)
        except Exception:
            logger.exception("import unconfirmed: marking its persons' states failed")

    # ---- what an import can carry ------------------------------------------------------------------------
    def _importable(self, desired: Desired, state: PersonState | None, ops: list[Operation]) -> bool:
        if self.hold_removals and split_removals(ops, state)[1]:
            return False
        if email_needs_check(desired, state):  # per person: the check that no other profile holds the address
            return False
        pushed = state.consents if state is not None and state.exists_in_apsis else {}
        for op in ops:
            if isinstance(op, CreateProfile | PatchTags):
                continue
            if isinstance(op, PatchAttributes):
                if any(value is None for value in op.attributes.values()):
                    return False
            elif isinstance(op, SetConsent):
                address = desired.email if op.channel == "email" else desired.mobile
                if not address:
                    return False
                # an opt-in after anything but nothing may need resubscribing, which an import never does, or
                # (UNKNOWN) the read before it: per person
                if op.type == "opt-in" and pushed.get(consent_key(op.topic, op.channel)) is not None:
                    return False
            else:
                return False
        return True

    # ---- the import ---------------------------------------------------------------------------------------
    def _import(self, rows: list[_Row]) -> set[int]:
        """Runs a chunk's imports one after another; returns the keys of rows that failed in any of them
        (those go person by person, which re-sends what the diff says from the stored state)."""
        failed: set[int] = set()
        self._deadline = None  # the chunk's imports share one wait (_run); the next chunk gets its own
        for index, consents in enumerate(self._consent_groups(rows)):
            first = index == 0
            pending = [
                row
                for row in rows
                if row.key not in failed
                and any(
                    self._slot(op) in consents
                    or (first and isinstance(op, CreateProfile | PatchAttributes | PatchTags))
                    for op in row.ops
                )
            ]
            if pending:
                failed |= self._import_file(pending, consents, with_profile=first)
        # the persons the chunk's imports wrote: once each (a row in two imports is one person), refused ones not
        self._counters["import_rows"] += len({row.key for row in rows} - failed)
        return failed

    @staticmethod
    def _slot(op: Operation) -> tuple[str, str, str] | None:
        return (op.type, op.topic, op.channel) if isinstance(op, SetConsent) else None

    def _consent_groups(self, rows: list[_Row]) -> list[set[tuple[str, str, str]]]:
        """The (type, topic, channel) consents of each import a chunk needs, in order. The first import also
        carries every row's attributes and tags (its consents may be empty). Within one import a topic has one
        column, so one type and, where the topic is mapped on both channels, one channel."""
        slots = {slot for row in rows for op in row.ops if (slot := self._slot(op)) is not None}
        groups: list[set[tuple[str, str, str]]] = []
        for kind in ("opt-in", "opt-out"):
            of_kind = {slot for slot in slots if slot[0] == kind}
            channels: dict[str, set[str]] = {}
            for _, topic, channel in of_kind:
                channels.setdefault(topic, set()).add(channel)
            if any(len(c) > 1 for c in channels.values()):
                groups += [g for ch in ADDRESS_COLUMNS if (g := {s for s in of_kind if s[2] == ch})]
            elif of_kind:
                groups.append(of_kind)
        if groups and next(iter(groups[0]))[0] == "opt-in":
            return groups  # the opt-ins ride with the attributes, as in APSIS's own opt-in file
        return [set(), *groups]

    def _import_file(self, rows: list[_Row], consents: set[tuple[str, str, str]], *, with_profile: bool) -> set[int]:
        spec, data = self._file(rows, consents, with_profile=with_profile)
        if data is None or len(data) > MAX_IMPORT_FILE_BYTES:
            return {row.key for row in rows}
        try:
            report = self._run(spec, data)
        except RejectedValue:
            return {row.key for row in rows}  # the file as a whole was refused: every row goes per person
        self._counters["imports"] += 1
        if with_profile:
            self._count_recreated(rows, report)
        # removals stay identifiable per kind (a removal gate reads these): opt-out files, tag removals
        kind = next(iter(consents))[0] if consents else "profile"
        self._counters[f"import_rows_{kind.replace('-', '_')}"] += len(rows)
        if with_profile:
            self._counters["import_tag_removals"] += sum(
                1 for row in rows for op in row.ops if isinstance(op, PatchTags) for on in op.tags.values() if not on
            )
        return failed_rows(report, [row.key for row in rows], _row_lines(data))

    def _count_recreated(self, rows: list[_Row], report: dict[str, Any]) -> None:
        """An import upserts: a profile deleted in APSIS One behind our back is created again by it, holding only
        the file's columns, while the stored state says the rest is there (diff mode re-creates such a profile
        whole: sync.PersonSyncer._profile_gone). Which rows they were the report does not say; how many it does
        (created beyond the rows we create), so the run report says it and names the repair (reconcile --fix)."""
        created = report.get("created")
        expected = sum(1 for row in rows if any(isinstance(op, CreateProfile) for op in row.ops))
        if isinstance(created, int) and created > expected:
            self._counters["import_recreated"] += created - expected
            logger.warning(
                "an import created profiles the states say exist: deleted in APSIS One; reconcile --fix fills them",
                extra={"recreated": created - expected},
            )

    def _run(self, spec: dict[str, Any], data: bytes) -> dict[str, Any]:
        """Create, upload, then poll the status adaptively: `poll_interval` first (a small file is done in a
        second), then 1.5 times longer each time up to MAX_POLL_INTERVAL (APSIS's processing time is not
        documented: a long import costs a few polls a minute, not one a second). APSIS allows 3 imports in
        flight and 10 requests a minute: a 429 waits for a slot (backing off) within `timeout`."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout
        deadline = self._deadline
        backoff = 2.0
        while True:
            try:
                created = self.apsis.create_import(spec)
                break
            except RateLimited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                time.sleep(min(backoff, remaining))
                backoff = min(backoff * 2, 20.0)
        import_id, upload_url = created.get("import_id"), created.get("file_upload_url")
        if not import_id or not upload_url:  # an answer we cannot use: retried, never taken for an import
            raise ApsisUnavailable("APSIS create import: the answer has no import_id or file_upload_url")
        self.uploaded = True  # set before the call: an upload that times out may still have reached APSIS
        self.apsis.upload_import_file(upload_url, created.get("file_upload_body") or {}, data)
        interval = self.poll_interval
        while True:
            result = self.apsis.get_import(import_id)
            self._counters["import_polls"] += 1
            status = str(result.get("status") or "").strip().lower()  # the documented values, in any case
            if status not in IMPORT_PENDING:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApsisUnavailable(f"APSIS import {import_id} still {status} after {self.timeout}s")
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, MAX_POLL_INTERVAL)
        report = report_of(result, import_id, status)
        if status not in IMPORT_COMPLETED and status not in IMPORT_FAILED:  # which rows it applied is unknown
            self._counters["import_unreadable"] += 1
            logger.warning("an import ended in a status of no known meaning", extra={"import_status": status[:40]})
            raise RejectedValue(f"APSIS import {import_id} ended {status[:40]!r}: no known import status")
        if status in IMPORT_FAILED:
            listed = report.get("errors")
            errors: list[Any] = listed if isinstance(listed, list) else []
            detail = "; ".join(str(e.get("message") if isinstance(e, dict) else e) for e in errors)
            raise RejectedValue(f"APSIS import {import_id} failed: {_redact(detail)}", detail=_redact(detail))
        return report

    def _file(
        self, rows: list[_Row], consents: set[tuple[str, str, str]], *, with_profile: bool
    ) -> tuple[dict[str, Any], bytes | None]:
        """The spec and CSV of one import; (spec, None) when a topic's header would collide with a column."""
        attributes: list[str] = []
        tags: list[str] = []
        if with_profile:
            attributes = sorted(
                {name for row in rows for op in row.ops if isinstance(op, PatchAttributes) for name in op.attributes}
            )
            tags = sorted({tag for row in rows for op in row.ops if isinstance(op, PatchTags) for tag in op.tags})
        kinds = {kind for kind, _, _ in consents}
        topics = sorted({topic for _, topic, _ in consents})
        channels = [ch for ch in ADDRESS_COLUMNS if any(c == ch for _, _, c in consents)]
        versions = self._attribute_versions() if attributes else {}
        fixed = [KEY_COLUMN, *ADDRESS_COLUMNS.values(), *attributes, *(f"tag:{tag}" for tag in tags)]
        spec: dict[str, Any] = {
            "keyspace_mapping": {"keyspace_discriminator": self.cfg.apsis.keyspace, "field_selector": KEY_COLUMN},
            "options": {"update_existing_profiles": True, "clear_existing_attributes": False},
            "attribute_mappings": [
                {"field_selector": name, "attribute_version_id": versions[name]}
                if name in versions
                else {"field_selector": name, "attribute_discriminator": name}
                for name in attributes
            ],
            "consent_mappings": [
                {
                    "address_field_selector": ADDRESS_COLUMNS[channel],
                    "consents": [
                        {
                            "field_selector": topic,  # APSIS's layout: the column is headed by the topic
                            "channel_discriminator": CHANNELS[channel],
                            "topic_discriminator": topic,
                            "type": kind,
                            "resubscribe_if_opted_out": False,
                        }
                        for kind, topic, ch in sorted(consents)
                        if ch == channel
                    ],
                }
                for channel in channels
            ],
            "tag_mappings": [{"field_selector": f"tag:{tag}", "tag_discriminator": tag} for tag in tags],
        }
        if len(kinds) > 1 or set(topics) & set(fixed):
            return spec, None  # cannot be said in this layout: the rows go person by person
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*fixed, *topics], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            line = dict.fromkeys(writer.fieldnames, "")
            line[KEY_COLUMN] = row.desired.profile_key
            line["email"] = _cell(row.desired.email)
            line["mobile"] = _cell(row.desired.mobile)
            for op in row.ops:
                if isinstance(op, PatchAttributes) and with_profile:
                    line.update({name: _cell(value) for name, value in op.attributes.items()})
                elif isinstance(op, SetConsent) and self._slot(op) in consents:
                    line[op.topic] = CONSENT_CELL
                elif isinstance(op, PatchTags) and with_profile:
                    line.update({f"tag:{tag}": _cell(on) for tag, on in op.tags.items()})
            writer.writerow(line)
        return spec, buffer.getvalue().encode("utf-8")

    def _attribute_versions(self) -> dict[str, str]:
        """Imports name attributes by their live version id; the list changes rarely, so it is cached."""
        cache_key = (self.cfg.integration_id, self.cfg.apsis.section)
        with _versions_lock:
            hit = _versions.get(cache_key)
            if hit and time.monotonic() - hit[0] < VERSIONS_TTL:
                return hit[1]
        versions: dict[str, str] = self.apsis.live_attribute_versions()
        with _versions_lock:
            _versions[cache_key] = (time.monotonic(), versions)
        return versions

    def _store(self, row: _Row) -> Outcome:
        outcome = Outcome(row.key, "synced", list(row.ops))
        try:
            # Stamp the opt-ins sent in bulk too: an APSIS opt-out that lands close to one must be re-sent (sync.py).
            new_state = stamp_opt_ins(apply_operations(row.state, row.desired, row.ops), row.ops, utc_now())
            self.states.put(new_state)
        except StaleWrite:  # APSIS holds the file's values; the newer stored state must learn it (sync.py)
            outcome.result = "stale"
            reconcile_sent(self.states, self.cfg.integration_id, row.key, list(row.ops), utc_now())
        return outcome


def _row_lines(data: bytes) -> list[int] | None:
    """The file line each data row starts on (header = line 1), or None when every row is one line (a value
    with line breaks is a quoted multi-line cell): import_report.failed_rows reads a file line by them."""
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    next(reader, None)
    starts, line = [], 2
    for _ in reader:
        starts.append(line)
        line = reader.line_num + 1
    return starts if line - 2 != len(starts) else None
