"""Query tags: each mapped Efficy query runs once per full sync and its tag mirrors the result.

Members get the tag, former members lose it (mirror, not add-only). Who was a member last time is kept per
query in the STATE table as one compressed snapshot (store/query_members.py): a query of a million members is a
few hundred kilobytes in a handful of items, instead of a million items to read and rewrite.
Only persons the sync keeps in APSIS One are tagged; the person's stored state learns the tag too, so an
untag on a lost condition (`on_condition_lost: untag`) also takes query tags away.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from ..clients.apsis_scope import consents_or_gone
from ..clients.errors import ApiError, ApsisUnavailable, EfficyBusinessError, NotFound, acknowledgeable
from ..clients.http import map_in_context
from ..config import IntegrationConfig
from ..observability import count, logger
from ..person_plan import PatchTags
from ..state import PersonState, utc_now
from ..state_updates import mark_unknown, with_tags
from ..store import protocols
from ..store.person_items import StaleWrite
from ..store.query_members import CHUNK_BYTES as CHUNK_BYTES  # the snapshot's items: store/query_members.py
from ..store.query_members import QueryMembersStore
from ..store.query_members import decode_members as decode_members
from ..store.query_members import encode_members as encode_members

#: the member snapshots' store, under the name the full sync and the tools construct it by
QueryMembers = QueryMembersStore
TAG_WORKERS = 8  # persons tagged at once; the APSIS pace (PacedApsis), not this, bounds the request rate
TAG_BATCH_PER_WORKER = 25  # between batches the call checks how much time it has left
TAG_READ_CHUNK = 1000  # states read and planned at once: what a call holds in memory, whatever the query's size
TAG_RESERVE_SECONDS = 45.0  # stop this long before the Lambda's timeout and let the state machine call again
#: a query that answers no members while this many former members hold its tag is held (see mirror_query_tags)
EMPTIED_FLOOR = 2


_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((\S+)\s+(\S+)\s")


def schedule_due(schedule: str, last_run: str | None, now: datetime) -> bool:
    """Whether a query tag's own schedule (EventBridge syntax) asks for a run now.

    The sweeper calls this every few minutes, so `rate(...)` is honoured to that precision. For `cron(...)`
    only the minute and hour are read: the query runs once a day, at or after that time (UTC); richer cron
    expressions (days of week, months) are treated as daily.
    """
    if last_run is None:
        return True
    last = datetime.fromisoformat(last_run.replace("Z", "+00:00"))
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    rate = _RATE.match(schedule.strip())
    if rate:
        n, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        return now - last >= timedelta(seconds=n * {"minute": 60, "hour": 3600, "day": 86400}[unit])
    cron = _CRON.match(schedule.strip())
    minute = int(cron.group(1)) if cron and cron.group(1).isdigit() else 0
    hour = int(cron.group(2)) if cron and cron.group(2).isdigit() else 0
    todays = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    slot = todays if now >= todays else todays - timedelta(days=1)
    return last < slot


def _surely(state: PersonState, tag: str) -> bool:
    """The state says we set `tag` and APSIS confirmed it (not one whose call never reported back)."""
    return bool(state.tags.get(tag)) and tag not in state.tags_unknown


def eligible(state: PersonState | None) -> TypeGuard[PersonState]:
    """Tags go to profiles the sync keeps: created, and not skipped or deleted since."""
    return state is not None and state.exists_in_apsis and state.last_outcome not in ("skipped", "deleted")


def widen_snapshot(
    cfg: IntegrationConfig, members: protocols.QueryMembers, query: int, adding: set[int], run_id: str
) -> None:
    """Before a run's query tags go out (pages, import files, this step): the query's snapshot also names the
    persons about to get the tag. The snapshot is otherwise written only once a run's Tags step ends: a run
    that failed or was cancelled after its pages or files had tagged newcomers left them in no snapshot, and
    when they left the query no later run untagged them (untags are the snapshot's members who left, whose
    state says the tag is set). A superset is safe: a person is untagged only if their state says so. Written
    only when it grows (an unchanged re-sync writes nothing); the Tags step's own write narrows it again."""
    tags = [q.tag for q in cfg.tags.queries if q.query == query]
    previous: set[int] = set()
    for tag in tags:
        previous |= members.previous(cfg.integration_id, query, tag) or set()
    if not adding <= previous:
        members.put(cfg.integration_id, query, previous | adding, run_id=run_id, tags=tags, widened=True)


def plan_query_tags(
    cfg: IntegrationConfig,
    run_query: Callable[[int], list[int]],
    states: protocols.PersonStates,
    members: protocols.QueryMembers,
    run_id: str = "",
) -> dict[int, dict[str, bool]]:
    """key -> {tag: True (joined) | False (left)} from each query's answer against its last snapshot (widened
    by the members before any file tags them: tags.widen_snapshot, given the run's id). A tag already set is
    not sent again; a query that Efficy refuses (deleted, say) is left out, its tag untouched; an outage raises."""
    changes: dict[int, dict[str, bool]] = {}
    for query_tag in cfg.tags.queries:
        try:
            current = set(run_query(query_tag.query))
        except ApiError as exc:
            if exc.retryable or not isinstance(exc, EfficyBusinessError) or exc.code == "INVALID_RESPONSE":
                raise
            continue
        previous = members.previous(cfg.integration_id, query_tag.query, query_tag.tag) or set()
        if run_id:
            widen_snapshot(cfg, members, query_tag.query, current, run_id)
        for key in current:
            changes.setdefault(key, {})[query_tag.tag] = True
        for key in previous - current:
            changes.setdefault(key, {})[query_tag.tag] = False
    return changes


def tag_delta(wanted: dict[str, bool], state: PersonState | None, *, will_exist: bool) -> dict[str, bool]:
    """The query-tag changes to send for one person: a tag to set where the profile exists (or the import
    creates it) and does not have it yet; a tag to remove only where the stored state says we set it."""
    known = state.tags if state is not None else {}
    unsure = set(state.tags_unknown) if state is not None else set()
    out: dict[str, bool] = {}
    for tag, on in wanted.items():
        if on and (will_exist or eligible(state)) and (not known.get(tag) or tag in unsure):
            out[tag] = True
        elif not on and state is not None and state.exists_in_apsis and (known.get(tag) or tag in unsure):
            out[tag] = False
    return out


def mirror_query_tags(
    cfg: IntegrationConfig,
    *,
    run_query: Callable[[int], list[int]],
    apsis: Any,
    states: protocols.PersonStates,
    members: protocols.QueryMembers,
    dry_run: bool,
    run_id: str,
    would_sync: Callable[[list[int]], set[int]] | None = None,
    time_left: Callable[[], float] | None = None,
    workers: int = TAG_WORKERS,
    hold_untags: Callable[[str, int, int], bool] | None = None,
    should_continue: Callable[[], bool] | None = None,
    emptied_up_to: Callable[[str], int] = lambda tag: 0,
    after: int | None = None,
) -> dict[str, Any]:
    """Runs each mapped query, tags its members and untags former members; one APSIS call per person whose
    query tags change, `workers` at a time. Returns {"queries", "tagged", "untagged", "failed", "tags": {tag:
    {added, removed, members}}, "errors", "more"} (and "next" with `more`).

    The members are walked in key order, TAG_READ_CHUNK states at a time (read, planned, sent): a call holds
    the members' keys, never every member's state (a query of 215,000 members, its states all read at once,
    took more than the Tags step's 1 GB, and 100,000 more than the sweeper's 512 MB). Only the former members'
    states are read first, a chunk at a time too, for the untags the breaker judges before any goes out (every
    call reads them again: what it counts is what the gate judges).

    A query with very many members can take longer than one Lambda may run: when `time_left()` (seconds) drops
    under TAG_RESERVE_SECONDS the call stops between chunks and batches (it reads one chunk and sends one batch
    at least) and answers `more: True` and `next`: every member up to that key is done. Calling it again with
    `after=next` resumes there, without reading the done ones again (the Tags step's loop, the breaker's release,
    the sweeper: sweep.py keeps `next` with the query's snapshot); without `after` it starts over, and a
    person already tagged is recorded in its stored state, so the plan no longer holds it. A former member at
    or below `after` (one who left the query between two calls, or whom APSIS refused) is left for the next
    run: the snapshot keeps them. The member snapshots are widened before any tag goes out (widen_snapshot) and
    narrowed to the members only by the call that finishes. The counts are what this call did.

    A dry run created no profiles, so `would_sync(keys)` says which members without a profile the run would
    have created (and so tagged).

    The blast-radius breaker (safety.py): `hold_untags(tag, untags, former members)` True holds a query's
    untags back (answered as `held`, and every query's planned untags as `untags`); the held former members
    stay in the snapshot, so the run that releases them (or the next one) untags them then.

    A query that answers no members at all while former members hold its tag (EMPTIED_FLOOR or more) is no
    evidence they left it: an edited query, or rights the API user lost, empty it as well (and lost rights
    empty every query at once, where the breaker's `min_removals` lets small ones through). Its untags are held
    whatever their number (`held`, an error line, `QueryEmptied`), unless they are at most `emptied_up_to(tag)`
    (the admin confirmed removals: sys.maxsize for `full-sync start --allow-removals`, N for `--allow-removals-up-to
    N` after a run that held this query's untags, where they then wait for the gate like any other).

    `should_continue`: is the run still active? Asked before each batch: after a cancel, real-time changes apply
    again, and tags planned from this call's reads must not keep going out (`stopped: True`, the snapshot left
    widened, not narrowed, so the next run plans them again)."""
    per_tag: dict[str, Counter[str]] = {}
    results: dict[int, set[int]] = {}
    errors: dict[str, str] = {}
    kept: dict[int, set[int]] = defaultdict(set)  # former members the finishing call's snapshot still names
    plan: list[tuple[str, set[int], set[int]]] = []  # per query tag: its tag, its members, the untags to send
    for query_tag in cfg.tags.queries:
        try:
            current = set(run_query(query_tag.query))
        except ApiError as exc:
            if exc.retryable or not isinstance(exc, EfficyBusinessError) or exc.code == "INVALID_RESPONSE":
                raise  # an outage, refused credentials, an answer we cannot read: the step fails, nothing untagged
            # e.g. the query was deleted in Efficy: its tag is left as it is, the rest of the sync goes on
            errors[query_tag.tag] = f"query {query_tag.query}: {exc}"[:300]
            continue
        previous = members.previous(cfg.integration_id, query_tag.query, query_tag.tag) or set()
        results[query_tag.query] = current
        untags = tagged_formers(states, cfg.integration_id, query_tag.tag, previous - current)
        counts = per_tag.setdefault(query_tag.tag, Counter())
        counts["members"], counts["untags"] = len(current), len(untags)
        if not current and len(untags) >= EMPTIED_FLOOR and len(untags) > emptied_up_to(query_tag.tag):
            errors[query_tag.tag] = (
                f"query {query_tag.query} answered no members ({len(untags)} hold the tag): untags held until "
                f"`full-sync start --allow-removals-up-to {len(untags)}` (or `--allow-removals`)"
            )
            count("QueryEmptied", 1, integration_id=cfg.integration_id)
            logger.warning(
                "query answered no members: its untags are held",
                extra={"integration_id": cfg.integration_id, "tag": query_tag.tag, "untags": len(untags)},
            )
        elif not (untags and hold_untags is not None and hold_untags(query_tag.tag, len(untags), len(previous))):
            kept[query_tag.query] |= {key for key in untags if after is not None and key <= after}
            plan.append((query_tag.tag, current, untags))
            continue
        kept[query_tag.query] |= untags
        counts["held"] = len(untags)
        plan.append((query_tag.tag, current, set()))
    if not dry_run:
        for query, current in results.items():
            widen_snapshot(cfg, members, query, current, run_id)
    keys = sorted({key for _, current, untags in plan for key in (*current, *untags) if after is None or key > after})
    walk = _Walk(cfg, apsis, states, plan, per_tag, dry_run, would_sync, time_left, should_continue, workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="query-tags") as pool:
        ended, cursor = walk.run(keys, pool)
    if ended == "done" and not dry_run:
        for query, current in results.items():
            mirrored = [q.tag for q in cfg.tags.queries if q.query == query]
            members.put(cfg.integration_id, query, current | kept[query], run_id=run_id, tags=mirrored)
    return {
        "queries": len(cfg.tags.queries),
        "tagged": sum(c["added"] for c in per_tag.values()),
        "untagged": sum(c["removed"] for c in per_tag.values()),
        "failed": walk.failed,
        "tags": {tag: {k: v for k, v in c.items() if k not in ("untags", "held")} for tag, c in per_tag.items()},
        "errors": errors,
        "more": ended == "more",
        "stopped": ended == "stopped",
        "untags": {tag: c["untags"] for tag, c in per_tag.items() if c["untags"]},
        "held": {tag: c["held"] for tag, c in per_tag.items() if c["held"]},
        **({"next": cursor} if ended == "more" else {}),
    }


def tagged_formers(states: protocols.PersonStates, integration_id: str, tag: str, formers: set[int]) -> set[int]:
    """The untags: the former members whose state says we set `tag` (or may have), read TAG_READ_CHUNK at a
    time and kept as keys (their states are read again, a chunk at a time, where the untags are sent)."""
    untags: set[int] = set()
    ordered = sorted(formers)
    for start in range(0, len(ordered), TAG_READ_CHUNK):
        known = states.get_many(integration_id, ordered[start : start + TAG_READ_CHUNK])
        untags.update(k for k, s in known.items() if s.exists_in_apsis and (s.tags.get(tag) or tag in s.tags_unknown))
    return untags


@dataclass
class _Walk:
    """One call's walk over the members (mirror_query_tags): chunks of TAG_READ_CHUNK keys are read and
    planned; their changes wait in `pending` until a batch of them is ready (a sparse change is sent with
    others, `workers` at a time, not alone). `run` answers how it ended ("done", "more" or "stopped") and,
    with "more", the key up to which every member is done."""

    cfg: IntegrationConfig
    apsis: Any
    states: protocols.PersonStates
    plan: list[tuple[str, set[int], set[int]]]
    per_tag: dict[str, Counter[str]]
    dry_run: bool
    would_sync: Callable[[list[int]], set[int]] | None
    time_left: Callable[[], float] | None
    should_continue: Callable[[], bool] | None
    workers: int
    failed: int = 0
    batches: int = 0  # sent by this call

    def run(self, keys: list[int], pool: ThreadPoolExecutor) -> tuple[str, int | None]:
        pending: dict[int, dict[str, bool]] = {}
        batch = max(1, self.workers) * TAG_BATCH_PER_WORKER
        through: int | None = None
        for start in range(0, len(keys), TAG_READ_CHUNK):
            # reading counts too: every caller passes `next` back as `after`, so a resumed call no longer reads
            # the done ones (the sweeper too: one that started over read a done prefix longer than its time on
            # every sweep, and never got past it)
            if start and self._short():
                if pending and not self.batches and (ended := self._send(pool, pending, batch)):
                    return ended, None
                return "more", min(pending) - 1 if pending else through
            chunk = keys[start : start + TAG_READ_CHUNK]
            for key, tags in self._changes(chunk).items():
                if self.dry_run:
                    self._count(tags)
                else:
                    pending[key] = tags
            while len(pending) >= batch:
                if ended := self._send(pool, pending, batch):
                    return ended, min(pending) - 1
            through = chunk[-1]
        while pending:
            if ended := self._send(pool, pending, batch):
                return ended, min(pending) - 1
        return "done", None

    def _short(self) -> bool:
        return self.time_left is not None and self.time_left() < TAG_RESERVE_SECONDS

    def _changes(self, chunk: list[int]) -> dict[int, dict[str, bool]]:
        """key -> {tag: True | False} for the chunk's members and former members, from their states."""
        need = [key for key in chunk if any(key in current for _, current, _ in self.plan)]
        known = self.states.get_many(self.cfg.integration_id, need) if need else {}
        newcomers: set[int] = set()
        if self.dry_run and self.would_sync is not None and (unknown := [k for k in need if known.get(k) is None]):
            newcomers = self.would_sync(unknown)
        changes: dict[int, dict[str, bool]] = defaultdict(dict)
        for tag, current, untags in self.plan:
            for key in chunk:
                state = known.get(key)
                if key in current and ((eligible(state) and not _surely(state, tag)) or key in newcomers):
                    changes[key][tag] = True
                elif key in untags:
                    changes[key][tag] = False
        return changes

    def _send(self, pool: ThreadPoolExecutor, pending: dict[int, dict[str, bool]], batch: int) -> str | None:
        """The lowest `batch` pending persons tagged on the pool (the APSIS pace is shared and thread-safe), or
        why not: "more" (time is short, one batch sent already) or "stopped" (the run ended: a cancel)."""
        if self.batches and self._short():
            return "more"
        if self.should_continue is not None and not self.should_continue():
            return "stopped"
        keys = sorted(pending)[:batch]

        def tag(key: int) -> bool:
            return _tag_person(self.cfg, self.apsis, self.states, key, pending[key])

        for key, ok in zip(keys, map_in_context(pool, tag, keys), strict=True):
            tags = pending.pop(key)
            if ok:
                self._count(tags)
            else:
                self.failed += 1
        self.batches += 1
        return None

    def _count(self, tags: dict[str, bool]) -> None:
        for tag, on in tags.items():
            self.per_tag[tag]["added" if on else "removed"] += 1


def merge_results(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """Adds up the results of the calls of one resumed mirror (see `mirror_query_tags`)."""
    if not previous:
        return current
    merged = {**current}
    for name in ("tagged", "untagged", "failed"):
        merged[name] = int(previous.get(name, 0)) + int(current.get(name, 0))
    tags: dict[str, dict[str, int]] = {}
    for tag in {*previous.get("tags", {}), *current.get("tags", {})}:
        before, now = previous.get("tags", {}).get(tag, {}), current.get("tags", {}).get(tag, {})
        tags[tag] = {
            k: int(before.get(k, 0)) + int(now.get(k, 0)) for k in ("added", "removed") if k in before or k in now
        }
        if "members" in now or "members" in before:
            tags[tag]["members"] = int(now.get("members", before.get("members", 0)))
    merged["tags"] = tags
    merged["errors"] = {**previous.get("errors", {}), **current.get("errors", {})}
    merged["calls"] = int(previous.get("calls", 1)) + 1
    return merged


def _tag_person(
    cfg: IntegrationConfig, apsis: Any, states: protocols.PersonStates, key: int, tags: dict[str, bool]
) -> bool:
    """Only a refusal about this person is counted as a failed person; every other error propagates (the state
    machine retries the step or fails the run; done persons cost nothing again)."""
    try:
        apsis.patch_tags(str(key), tags)
    except NotFound:
        # gone only on proof: the tags path is an assumption (contracts/apsis-one.md), and a route the account
        # does not serve answers 404 too, which counted every person tagged while no tag existed
        if consents_or_gone(apsis, str(key)) is None:
            return True  # the profile is gone from APSIS: nothing to tag or untag
        raise ApsisUnavailable(
            "APSIS answered 404 to the profile-tags call of a profile it has: check apsis.profile_tags_path"
        ) from None
    except ApiError as exc:
        if exc.maybe_applied:  # a 207, or a call sent and never answered: APSIS may hold some of them; unknown,
            # sent again next run, also when the failure is the integration's (raised below: the step retries)
            record_tags(states, cfg.integration_id, key, tags, unsure=True)
        if not acknowledgeable(exc):
            raise
        return False
    record_tags(states, cfg.integration_id, key, tags)
    return True


def record_tags(
    states: protocols.PersonStates, integration_id: str, key: int, tags: dict[str, bool], *, unsure: bool = False
) -> None:
    """The person's stored state learns the tag changes APSIS took; read and written again when another sync
    stores the person in between: a tag set in APSIS but unknown to the state would never be taken away (an
    untag needs the state to say we set it). `unsure`: APSIS may or may not have taken them (a 207): unknown."""
    for _ in range(3):
        state = states.get(integration_id, key)
        if state is None:
            return
        try:
            if unsure:
                marked = mark_unknown(state, [PatchTags(str(key), tags)])
                states.put(marked.model_copy(update={"updated_at": utc_now()}))
            else:
                states.put(with_tags(state, tags, updated_at=utc_now()))
            return
        except StaleWrite:
            continue
