"""One drift reconciliation run: Efficy's persons page by page, APSIS One's profiles from one export.

Used by `efficy-sync reconcile` and by the scheduled `reconcile` Lambda; the comparison itself is
reconcile.py. Reads:
- APSIS One: one profile export of the section (the only way APSIS lists profiles; see
  clients/apsis_export.py), with exactly the attributes, tags and topics the integration maps;
- Efficy: the connector's records export, the full sync's paging (`page_size`, ordered by K_CONTACT), with
  the fields and CRM profiles the worker reads; the tag queries once each, when the integration has them;
- a profile whose key the Efficy pages skipped is read again by key (`get_persons`, whose "gone" needs two
  agreeing reads): only a person Efficy proves gone counts as deleted; an inconclusive answer is a note.

Resumable (`--all`): after each page the cursor (page, last key, the export's poll URL, the report so far) is
saved in the state table; a run started again with the same scope goes on from there while the export's poll
URL is valid (one day), and a new export is requested once it is gone.

Repair (`fix`): each drifting person's stored state is marked unknown where it drifts (reconcile.invalidate),
then the person is put on the real-time queue (operation Resync, source "reconcile"). The worker refetches
them from Efficy and syncs them with PersonSyncer, exactly as for a webhook: conditions, consent rules
(an APSIS opt-out is never turned into an opt-in), parking while a full sync runs, retries and the DLQ, and
any guard that sits on the real-time path. Query tags are mirrored by the full sync's Tags step (the
real-time path leaves them alone): their drift is marked in the state and repaired by the next full sync
or the query's schedule.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .changes import ContactChange
from .clients.apsis import ApsisClient
from .clients.apsis_export import ExportedProfile, ExportedProfiles, export_section, probe_profile
from .clients.efficy import EfficyClient
from .clients.errors import ApsisUnavailable, AuthError, EfficyInconclusive, NotFound
from .config import CRMID_ATTRIBUTE, EMAIL_ATTRIBUTE, IntegrationConfig
from .mapping import needed_fields
from .reconcile import CATEGORIES, DriftReport, PersonCheck, compare_person, invalidate
from .state import PersonState
from .store.persons import StaleWrite
from .store.protocols import PersonStates
from .store.reconcile_cursor import CursorStore

LIMITATIONS = [
    "APSIS One has no endpoint that lists a section's profiles page by page: its profiles are read from one "
    "profile export (asynchronous, 1 request/s, 60 downloads/min).",
    "Only profiles keyed in the integration's keyspace are ours; profiles known by e-mail or mobile only are "
    "not compared.",
    "Attribute, tag and consent names the integration does not map are not compared.",
]
FALLBACK_NOTE = (
    "APSIS One refused the profile export ({status}): profiles were read one by one from the keys the state "
    "table knows and the persons Efficy lists (one call each); only consents can be read that way, so attributes "
    "and tags were not compared, and profiles we never synced cannot be seen."
)


@dataclass
class Scope:
    """Which persons: `sample` first N from `from_key` (None: all), up to `to_key` (None: the end)."""

    sample: int | None = None
    from_key: int = 0
    to_key: int | None = None

    def label(self) -> str:
        return f"{self.sample or 'all'}:{self.from_key}:{self.to_key or ''}"

    def holds(self, key: int) -> bool:
        return key >= self.from_key and (self.to_key is None or key <= self.to_key)


@dataclass
class RunResult:
    report: DriftReport
    checks: list[PersonCheck] = field(default_factory=list)  # drifting persons only
    states: dict[int, PersonState] = field(default_factory=dict)
    profiles_exported: int = 0
    resumed: bool = False
    complete: bool = True
    limitations: list[str] = field(default_factory=lambda: list(LIMITATIONS))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.report.to_dict(),
            "profiles_exported": self.profiles_exported,
            "resumed": self.resumed,
            "complete": self.complete,
            "limitations": self.limitations,
        }


def export_profiles(
    cfg: IntegrationConfig,
    apsis: ApsisClient,
    *,
    with_queries: bool,
    poll_url: str | None = None,
    keep: Callable[[str], bool] | None = None,
) -> tuple[str, ExportedProfiles]:
    """The section's profiles with every attribute, tag and topic the integration maps (those `keep` takes)."""
    attributes = [EMAIL_ATTRIBUTE, CRMID_ATTRIBUTE, *(m.apsis for m in cfg.field_mappings)]
    topics = [c.subscription for c in cfg.consent_mappings]
    return export_section(
        apsis,
        attributes=attributes,
        tags=cfg.managed_tags(with_queries=with_queries),
        topics=topics,
        poll_url=poll_url,
        keep=keep,
    )


class InScope:
    """Which exported profiles a run holds: ours (K_CONTACT as we write it: "³" passes isdigit() and crashed
    int(), "03" is not ours) within the scope. The export holds the whole APSIS account, and every profile of it
    held at once outgrew the drift check's memory; the ones of ours out of scope are only counted (`ours`)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.ours = 0

    def __call__(self, key: str) -> bool:
        if not (key.isascii() and key.isdigit() and str(int(key)) == key):
            return False
        self.ours += 1
        return self.scope.holds(int(key))


def _exported(profiles: ExportedProfiles, keys: list[int]) -> dict[int, ExportedProfile]:
    """The exported profiles of `keys` (held compact: each read back when its page is compared)."""
    return {k: profiles[str(k)] for k in keys if str(k) in profiles}


def query_members(cfg: IntegrationConfig, efficy: EfficyClient) -> dict[str, set[int]] | None:
    """Members of each tag query; None when the integration has none."""
    if not cfg.tags.queries:
        return None
    return {q.tag: set(efficy.run_query(q.query)) for q in cfg.tags.queries}


class Reconciler:
    def __init__(
        self,
        cfg: IntegrationConfig,
        efficy: EfficyClient,
        apsis: ApsisClient,
        states: PersonStates,
        *,
        cursors: CursorStore | None = None,
        page_size: int | None = None,
        with_queries: bool = True,
    ) -> None:
        self.cfg = cfg
        self.efficy = efficy
        self.apsis = apsis
        self.states = states
        self.cursors = cursors
        self.page_size = page_size or min(cfg.efficy.page_size, 500)
        self.with_queries = with_queries and bool(cfg.tags.queries)

    def run(self, scope: Scope, *, resume: bool = True, on_page: Callable[[int, int], None] | None = None) -> RunResult:
        """Compares the persons in `scope`. Saves a cursor after each page when `cursors` is given."""
        cursor = self._cursor(scope) if resume else None
        result = RunResult(DriftReport.from_dict(cursor["report"]) if cursor else DriftReport(), resumed=bool(cursor))
        members = query_members(self.cfg, self.efficy) if self.with_queries else None
        if not self.with_queries and self.cfg.tags.queries:
            result.limitations.append("Query tags were not compared (their queries were not run).")
        wanted = InScope(scope)
        try:
            poll_url, profiles = export_profiles(
                self.cfg,
                self.apsis,
                with_queries=members is not None,
                poll_url=cursor["poll_url"] if cursor else None,
                keep=wanted,
            )
        except (NotFound, AuthError) as exc:
            if isinstance(exc, AuthError) and exc.status != 403:
                raise  # our credentials: not a missing permission to export
            poll_url, profiles = "", None
            result.limitations.append(FALLBACK_NOTE.format(status=exc.status))
        if profiles is None:  # reconcile from the keys we know: the state table's profiles, read one by one
            # keys only: the integration's states decoded at once outgrew the drift check's memory (keys_in_apsis)
            in_scope = {k for k in self.states.keys_in_apsis(self.cfg.integration_id) if scope.holds(k)}
            lookup = self._probe
        else:
            in_scope = {int(k) for k in profiles}  # ours within the scope only (InScope); read when compared
            if not wanted.ours:  # none at all (a range whose profiles were all deleted is `missing`, not this)
                self._refuse_empty_export()
            lookup = functools.partial(_exported, profiles)
        result.profiles_exported = len(in_scope)
        page = cursor["page"] if cursor else 0
        last_key = cursor["last_key"] if cursor else scope.from_key - 1
        fields = needed_fields(self.cfg)
        while True:
            records = self.efficy.list_persons_page(page, self.page_size, fields, include_profiles=True)
            persons = {int(r["K_CONTACT"]): r for r in records if scope.holds(int(r["K_CONTACT"]))}
            past_end = not records or (scope.to_key is not None and int(records[-1]["K_CONTACT"]) > scope.to_key)
            left = None if scope.sample is None else max(scope.sample - result.report.persons_checked, 0)
            if left is not None:
                persons = dict(sorted(persons.items())[:left])
            upto = max(persons, default=last_key)
            if past_end and left is None:
                upto = scope.to_key if scope.to_key is not None else max([upto, *in_scope])
            elif past_end and left is not None:
                # the export ended before the sample was full: the profiles past its end are judged too, up to
                # the sample's size (they were never judged, so orphans at the tail, or every profile when the
                # export answered empty, read as "0 checked, no drift")
                rest = sorted(k for k in in_scope if k > upto)[: max(left - len(persons), 0)]
                upto = max([upto, *rest])
            past_end = past_end or (left is not None and len(persons) >= left)
            gone = [k for k in in_scope if last_key < k <= upto and k not in persons]
            self._compare(persons, gone, lookup, members, result)
            last_key, page = max(upto, last_key), page + 1
            if not past_end and self.cursors is not None and scope.sample is None:
                doc = {"scope": scope.label(), "page": page, "last_key": last_key, "poll_url": poll_url}
                self.cursors.save(self.cfg.integration_id, {**doc, "report": result.report.to_dict()})
            if on_page is not None:
                on_page(page, result.report.persons_checked)
            if past_end:
                break
        if self.cursors is not None and scope.sample is None:
            self.cursors.clear(self.cfg.integration_id)
        return result

    def _refuse_empty_export(self) -> None:
        """An export with no profile of ours at all while the state table knows profiles we created is no
        evidence (a wrong alias, a proxy, an export bug): read as such, every person was `missing`, and --fix
        re-planned them all from nothing. Raised as an outage: run it again; a lasting one is a setting to check."""
        known = sum(1 for _ in self.states.keys_in_apsis(self.cfg.integration_id))
        if known:
            raise ApsisUnavailable(
                f"APSIS One's profile export holds no profile while {known} are known to exist there: not "
                "trusted (run again; if it lasts, check apsis.section and apsis.keyspace)"
            )

    def _probe(self, keys: list[int]) -> dict[int, ExportedProfile]:
        topics = {c.subscription for c in self.cfg.consent_mappings}
        found = {k: probe_profile(self.apsis, str(k), topics) for k in keys}
        return {k: p for k, p in found.items() if p is not None}

    def _cursor(self, scope: Scope) -> dict[str, Any] | None:
        if self.cursors is None or scope.sample is not None:
            return None
        cursor = self.cursors.load(self.cfg.integration_id)
        return cursor if cursor and cursor.get("scope") == scope.label() else None

    def _compare(
        self,
        persons: dict[int, dict[str, Any]],
        unlisted: list[int],
        lookup: Callable[[list[int]], dict[int, ExportedProfile]],
        members: dict[str, set[int]] | None,
        result: RunResult,
    ) -> None:
        """Compares one page's persons, and the exported profiles whose keys the page skipped: those are read
        again by key, and only a person Efficy proves gone counts as deleted."""
        found: dict[int, dict[str, Any]] = {}
        confirmed_gone: list[int] = []
        for key in unlisted:
            try:
                again = self.efficy.get_persons([key], needed_fields(self.cfg))
            except EfficyInconclusive:
                result.report.note("unconfirmed_absence")
                continue
            if key in again:
                found[key] = again[key]
            else:
                confirmed_gone.append(key)
        keys = sorted({*persons, *found, *confirmed_gone})
        states = self.states.get_many(self.cfg.integration_id, keys) if keys else {}
        profiles = lookup(keys) if keys else {}
        for key in keys:
            person = persons.get(key) or found.get(key)
            tags = None if members is None else {tag for tag, who in members.items() if key in who}
            check = compare_person(self.cfg, key, person, states.get(key), profiles.get(key), query_tags=tags)
            result.report.add(check)
            if check.drifts:
                result.checks.append(check)
                if key in states:
                    result.states[key] = states[key]


def fix(
    cfg: IntegrationConfig,
    result: RunResult,
    states: PersonStates,
    enqueue: Callable[[list[ContactChange]], Any],
) -> dict[str, Any]:
    """Marks each drifting person's state unknown where it drifts and puts the person on the real-time queue
    (see the module docstring). Returns what was queued and what was left, per category."""
    run = uuid.uuid4().hex[:12]  # FIFO deduplication must not drop a second repair of the same person
    changes: list[ContactChange] = []
    left: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
    for check in result.checks:
        for drift in check.drifts:
            if not drift.fixable:
                left[drift.category] += 1
        if not any(d.fixable for d in check.drifts):
            continue
        state = _store_invalidated(cfg.integration_id, check, result.states.get(int(check.person_key)), states)
        if state is None:  # its state kept changing under us: left for the next run, and said so
            left["changed_meanwhile"] = left.get("changed_meanwhile", 0) + 1
            continue
        changes.append(
            ContactChange(
                integration_id=cfg.integration_id,
                person_key=int(check.person_key),
                operation="Delete" if check.deleted else "Resync",
                source="reconcile",
                fingerprint=run,
                received_at=time.time(),
            )
        )
    if changes:
        enqueue(changes)
    # a resumed run counts the drift of the pages before its cursor, but holds only its own pages' persons: those
    # earlier ones are not repaired here (reported, so that a `--restart --fix` repairs them, never silently left)
    earlier = result.report.persons_drifting - sum(1 for c in result.checks if c.drifts)
    if result.resumed and earlier > 0:
        left["earlier_pages"] = earlier
    query_tags = sum(1 for c in result.checks for d in c.drifts if d.category == "tags" and d.detail.get("query_tag"))
    return {
        "enqueued": len(changes),
        "path": "real-time queue (worker: refetch from Efficy, PersonSyncer, consent rules)",
        "not_fixed": {k: v for k, v in left.items() if v},
        "query_tags_pending_full_sync": query_tags,
    }


def _store_invalidated(
    integration_id: str, check: PersonCheck, state: PersonState | None, states: PersonStates
) -> PersonState | None:
    """Stores reconcile.invalidate's state; a state another sync stored meanwhile is read again (its sync then
    carries the repair as well). That sync's newer Efficy change is refused as StaleWrite, not ConflictingWrite
    (the stamps differ): uncaught, one person synced between the check and the fix stopped the whole --fix, with
    the persons marked before it queued for nothing."""
    for _ in range(3):
        new = invalidate(integration_id, check, state)
        if new is None:
            return None
        try:
            states.put(new)
            return new
        except StaleWrite:  # ConflictingWrite included
            state = states.get(integration_id, check.person_key)
    return None


def publish_drift_metrics(integration_id: str, report: DriftReport) -> None:
    """One EMF document with the drift counts per category, dimension integration_id (off the cold path of
    every other function: only the reconcile Lambda imports this module)."""
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    from .observability import INTEGRATION_DIMENSION, NAMESPACE, SERVICE

    provider = AmazonCloudWatchEMFProvider(
        metric_set={}, dimension_set={}, metadata_set={}, namespace=NAMESPACE, service=SERVICE
    )
    provider.add_dimension(name=INTEGRATION_DIMENSION, value=integration_id)
    for category, value in sorted(report.counts.items()):
        provider.add_metric(name=f"Drift{category.capitalize()}", unit=MetricUnit.Count, value=value)
    provider.add_metric(name="DriftPersonsChecked", unit=MetricUnit.Count, value=report.persons_checked)
    provider.flush_metrics()
