"""The blast-radius breaker in a full sync: hold removals during the run, judge the totals, send or halt.

Pages, Seams and Tags send additions and updates at once but hold every removal (opt-out, untag, profile
delete): the person's key goes to the HELD# lot (store/removals.py) and the removal is counted on the run
(rm:*), beside what the persons held before (base:*). After Tags, the RemovalGate step judges the totals
(safety.judge, with the integration's `safety` settings):
- within the threshold, ReleaseRemovals syncs every held person again from Efficy's current data, now
  without holding (and re-runs the query-tag mirror for held untags), then Finish ends the run as usual;
- beyond it, HaltRun ends the run `halted` (lock released, parked changes re-enqueued, FullSyncHalted metric,
  report with the counts per subscription and tag). Nothing was removed. The admin reads the counts and
  confirms them with `efficy-sync full-sync start ID --allow-removals-up-to N`: a new run that holds and judges
  like any other, each kind the admin read over its limit raised to N or to the count they read for it, whichever
  is smaller (confirmation), so what the admin read goes out and more (the CRM changed again since) halts again. `--allow-removals` confirms any number: a new run whose pages send removals at once (a
  clean re-run: unchanged persons cost no APSIS call) and whose release also closes the real-time breaker.
A dry run holds nothing (it sends nothing) but counts the same removals and says whether the real run would
halt. Held CRM opt-outs stay what APSIS has not been told yet: nothing opts these persons in meanwhile, since
the release and every later sync plan from the newest CRM data (only an explicit newer change there can).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..mapping import needed_fields
from ..observability import count, logger
from ..safety import (
    ALLOW_COUNTER,
    CONFIRM_PREFIX,
    CONFIRMED_COUNTER,
    HALT_COUNTER,
    MIN_COUNTER,
    PERCENT_COUNTER,
    UNTAG,
    bases_of,
    confirmed_of,
    held_after,
    judge,
    limit,
    removals_of,
)
from ..store.removals import HeldRemovals, RemovalBreaker
from ..sync import PersonSyncer
from .ending import release_and_drain
from .report import build_report, tally
from .runs import Run, utc_now
from .steps import GateResult

if TYPE_CHECKING:
    from ..clients.apsis import ApsisClient
    from .lifecycle import FullSync
    from .steps import RunRef

RELEASE_CHUNK = 50
RELEASE_RESERVE_SECONDS = 45.0


def held_source(run: Run) -> str:
    """What a run's holds are recorded under (HeldRemovals.hold): release sends only its own, unless allowed."""
    return f"full sync {run.run_id}"


def read_allow_removals(sync_input: dict[str, Any]) -> tuple[bool, int, str | None]:
    """(allow_removals, allow_removals_up_to, the problem with them) from a full-sync input: `true` confirms
    any number of removals, a count N (`--allow-removals-up-to N`) up to N of each kind."""
    value = sync_input.get(ALLOW_COUNTER, False)
    up_to = sync_input.get(CONFIRMED_COUNTER)
    if not isinstance(value, bool):
        return False, 0, f"allow_removals must be true or false, not {value!r}"
    if up_to is None:
        return value, 0, None
    if isinstance(up_to, bool) or not isinstance(up_to, int) or up_to < 1:
        return False, 0, f"allow_removals_up_to must be a count of removals (1 or more), not {up_to!r}"
    if value:
        return False, 0, "allow_removals (any number) and allow_removals_up_to exclude each other"
    return False, up_to, None


def allows_removals(run: Run) -> bool:
    """The admin confirmed any number of removals: the run holds nothing, and releases every held key."""
    return bool(run.counters.get(ALLOW_COUNTER))


def confirmed_kinds(run: Run) -> dict[str, int]:
    """Per removal counter, up to how many removals the admin confirmed (`--allow-removals-up-to N`: for each
    kind the run they read was over on, N or its count there if smaller): the run holds and judges like any run,
    those limits raised (safety.judge)."""
    return confirmed_of(run.counters)


def confirmable(report: Mapping[str, Any]) -> set[str]:
    """The removal kinds an admin read as held in a run's report, which `--allow-removals-up-to N` may raise:
    its breaker lines over the limit (a halted run, or a dry run that would halt), and the untags of a query that
    answered no members (an error line with the untags held)."""
    rows = (report.get("breaker") or {}).get("removals") or {}
    kinds = {name for name, row in rows.items() if row.get("over")}
    return kinds | {f"{UNTAG}{tag}" for tag in _emptied_held(report)}


def _emptied_held(report: Mapping[str, Any]) -> dict[str, int]:
    """Per query tag whose query answered no members, the untags the report says were held. The Tags step's
    answer keeps them under `held` (its per-tag lines drop the count): read both places."""
    tags = report.get("query_tags") or {}
    errors = tags.get("errors") or {}
    held = {tag: int(c.get("held", 0) or 0) for tag, c in (tags.get("tags") or {}).items()}
    held |= {tag: int(n or 0) for tag, n in (tags.get("held") or {}).items()}
    return {tag: n for tag, n in held.items() if n and tag in errors}


def reported(report: Mapping[str, Any]) -> dict[str, int]:
    """Per removal kind, the count a run's report showed the admin: its breaker lines (every kind its gate
    judged), and an emptied query's held untags."""
    rows = (report.get("breaker") or {}).get("removals") or {}
    counts = {f"{UNTAG}{tag}": n for tag, n in _emptied_held(report).items()}
    return counts | {name: int(row.get("removals", 0)) for name, row in rows.items()}


#: the ends of a run that may come before its gate: their report then has no breaker section
ENDED_EARLY = ("cancelled", "failed", "timed_out")
#: how many of the newest runs Begin reads for a confirmation (and `full-sync status` for the count it names)
CONFIRMATION_HISTORY = 5


def judged_run(history: Iterable[Run]) -> tuple[Run | None, list[Run]]:
    """(the newest ended run whose gate judged its removals, or None; the newer ones that ended before theirs).

    The run an admin confirms is the one whose counts they read. A run cancelled, failed or timed out before
    its gate judged nothing and sent no removal its gate would have judged (its pages held them, or it was
    started with `--allow-removals`, which needs no count): it tells the admin nothing, and refusing a
    confirmation because of it sent the admin to re-read the counts they had just read. So Begin looks past it
    to the run that did judge. That is at least as safe as the refusal: what the newer run changed is judged
    again by the confirmed run's own gate, against limits no higher than the counts that run reported. A run
    that succeeded, halted or judged before it ended is never looked past."""
    skipped: list[Run] = []
    for run in history:
        if run.active:
            continue
        if run.status in ENDED_EARLY and not (run.report or {}).get("breaker"):
            skipped.append(run)
            continue
        return run, skipped
    return None, skipped


def confirmation(history: Iterable[Run], up_to: int) -> tuple[dict[str, int], str | None]:
    """The counters Begin records for `--allow-removals-up-to N`, from the integration's newest ended run whose
    gate judged its removals (judged_run: the one the admin read, halted or a dry run that would halt): each kind
    it was over on, and each kind it was itself confirmed for unless it sent them (a real run that succeeded). A
    dry run previewing a confirmed count is over on nothing it was confirmed for, and a confirmed run that halts
    again on one kind is not over on the others, which it still held: read from its report alone, the count its
    report advised was refused after the preview, and raised only the kind over at the last halt, so the runs
    halted on each kind in turn.

    Each kind's limit is raised to the smaller of N and the count that run's report showed for it: N is one
    number for every kind, the largest the report named, and raising every kind to it let a kind the admin read
    at 6 send 40 unseen when the CRM drifted meanwhile. A kind judged and found at none is not raised; a kind
    whose count the report cannot give (no breaker section) keeps what it was confirmed for, up to N. N smaller
    than a kind's count confirms N: that kind halts again. Else the problem."""
    run, skipped = judged_run(history)
    early = ", ".join(f"{r.run_id} {r.status}" for r in skipped)
    if run is None:
        if skipped:
            return {}, f"the newest runs ({early}) ended before the breaker judged their removals"
        return {}, "the integration has no ended run"
    report = run.report or {}
    counts, judged = reported(report), bool(report.get("breaker"))
    kinds = {kind: counts.get(kind, up_to) for kind in confirmable(report)}
    if run.dry_run or run.status != "succeeded":  # nothing it was confirmed for has gone out for sure
        for kind, was in confirmed_kinds(run).items():
            kinds.setdefault(kind, counts.get(kind, 0) if judged else was)
    raised = {f"{CONFIRM_PREFIX}{kind}": min(up_to, n) for kind, n in sorted(kinds.items()) if n > 0}
    if not raised:
        where = f"the newest run ({run.run_id}, {run.status})"
        if skipped:
            where = f"the newest run the breaker judged ({run.run_id}, {run.status}; {early} ended before it did)"
        return {}, f"{where} held no removals over the breaker's limit"
    return {CONFIRMED_COUNTER: up_to, **raised}, None


def emptied_up_to(run: Run) -> Callable[[str], int]:
    """Per tag, how many untags of a query that answered no members may go in this run (mirror_query_tags)."""
    if allows_removals(run):
        return lambda tag: sys.maxsize
    confirmed = confirmed_kinds(run)
    return lambda tag: confirmed.get(f"{UNTAG}{tag}", 0)


def release_untags(run: Run) -> Callable[[str, int, int], bool] | None:
    """The release's query-tag mirror (ReleaseRemovals) holds a tag's untags again when they now outnumber
    what the gate let through for that tag (its limit, raised to a confirmed count): the persons who left its
    query since the Tags step were judged by no gate, and sending them all took a run confirmed up to N (or an
    ordinary one, within its limit) past it. They stay in the member snapshot: the next run's gate judges
    them. None (send at once) in a dry run, an allowed run, or before the gate recorded its thresholds."""
    counters = run.counters
    if run.dry_run or allows_removals(run) or PERCENT_COUNTER not in counters:
        return None
    percent, minimum = counters[PERCENT_COUNTER] / 100, int(counters.get(MIN_COUNTER, 1))
    bases, confirmed = bases_of(counters), confirmed_kinds(run)

    def hold(tag: str, untags: int, former: int) -> bool:
        if not judge({f"{UNTAG}{tag}": untags}, bases, percent, minimum, confirmed).halt:
            return False
        return _tripped(run.integration_id, tag, untags, former, "by the release: more than its gate judged")

    return hold


def _tripped(integration_id: str, tag: str, untags: int, former: int, by: str) -> bool:
    """A query tag's untags held (the alarm's metric and one line): True, for the hold callbacks to answer."""
    count("RemovalBreakerTripped", 1, integration_id=integration_id)
    logger.warning(
        f"query tag untags held {by}",
        extra={"integration_id": integration_id, "tag": tag, "untags": untags, "members": former},
    )
    return True


class HoldAll:
    """The gate of a full sync's pages (safety.RemovalGate): holds every removal and remembers whose."""

    def __init__(self) -> None:
        self.keys: set[int] = set()
        self._lock = threading.Lock()

    def admit(self, key: int, removals: list[Any]) -> bool:
        with self._lock:
            self.keys.add(int(key))
        return False


@dataclass
class Breaker:
    full_sync: FullSync
    held: HeldRemovals
    breaker: RemovalBreaker

    @classmethod
    def of(cls, full_sync: FullSync) -> Breaker:
        return cls(full_sync, full_sync.held, full_sync.removal_breaker)

    # ---- during the run -----------------------------------------------------------------------------------
    def page_gate(self, run: Run) -> HoldAll | None:
        """The gate pages and seams sync with: None (send removals at once) in a dry run or an allowed run."""
        return None if run.dry_run or allows_removals(run) else HoldAll()

    def remember(self, run: Run, gate: HoldAll | None) -> None:
        """Keeps what a page, a seams call or an imports call held, under this run: called once its counters
        are the run's (a failed page's are not, so neither are its holds: the next run plans them again)."""
        if gate is not None and gate.keys:
            self.held.hold(run.integration_id, gate.keys, held_source(run))

    def hold_untags(self, run: Run) -> Callable[[str, int, int], bool] | None:
        """The Tags step holds every untag for the gate, unless removals go at once."""
        return None if run.dry_run or allows_removals(run) else (lambda tag, n, base: True)

    def scheduled_hold(self, cfg: Any) -> Callable[[str, int, int], bool]:
        """A query tag's own schedule has no gate step: it holds a query's untags beyond the threshold (of its
        former members) and raises the alarm; the next full sync's gate judges them (a halt is confirmed as any:
        `full-sync start --allow-removals-up-to N`)."""
        safety = cfg.safety

        def hold(tag: str, untags: int, former: int) -> bool:
            if untags <= limit(former, safety.max_removal_percent, safety.min_removals):
                return False
            return _tripped(cfg.integration_id, tag, untags, former, "by the removal breaker")

        return hold

    # ---- the steps ----------------------------------------------------------------------------------------
    def gate(self, run_payload: RunRef | Mapping[str, Any], tags_result: dict[str, Any] | None) -> GateResult:
        """Judges the run's removals. {"halt": bool, "would_halt": bool, "removals": n}."""
        fs = self.full_sync
        run = fs._run(run_payload)
        if not run.active:
            return GateResult(halt=False, would_halt=False, removals=0)
        safety = fs.config(run.integration_id, run.config_version).safety
        untags = {f"{UNTAG}{tag}": int(n) for tag, n in (tags_result or {}).get("untags", {}).items()}
        # judged with the percentage as recorded (hundredths): the report judges again from the counters, and a
        # config of 4.995 % halted at 5 of 100 holders where the report saw 5.00 %, no line over, and named
        # `--allow-removals-up-to 0`
        percent_x100 = round(safety.max_removal_percent * 100)
        fs.runs.add_once(
            run.integration_id,
            run.run_id,
            "breaker-gate",
            {**untags, PERCENT_COUNTER: percent_x100, MIN_COUNTER: safety.min_removals},
        )
        run = fs._run(run_payload)
        verdict = judge(
            removals_of(run.counters),
            bases_of(run.counters),
            percent_x100 / 100,
            safety.min_removals,
            confirmed_kinds(run),
        )
        halt = verdict.halt and not run.dry_run and not allows_removals(run)
        if not run.dry_run:
            self.breaker.set_base(run.integration_id, held_after(run.counters))
        if halt:
            fs.runs.add_once(run.integration_id, run.run_id, "breaker-halt", {HALT_COUNTER: 1})
        removals = sum(line["removals"] for line in verdict.lines.values())
        return GateResult(halt=halt, would_halt=verdict.halt, removals=removals)

    def halt(self, run_payload: RunRef | Mapping[str, Any], tags_result: dict[str, Any] | None) -> dict[str, Any]:
        """Ends the run `halted`: nothing removed, the lock released, parked changes re-enqueued, the alarm."""
        fs = self.full_sync
        run = fs._run(run_payload)
        if not run.active:
            return run.report or build_report(run, status=run.status)
        drained = release_and_drain(fs, run)
        run = fs._run(run_payload)
        report = drained.noted(build_report(run, status="halted", query_tags=tags_result, ended_at=utc_now()))
        if fs.runs.end(run.integration_id, run.run_id, "halted", report=report):
            count("FullSyncHalted", 1, integration_id=run.integration_id)
            logger.warning(
                "full sync halted by the removal breaker",
                extra={"integration_id": run.integration_id, "breaker": report.get("breaker")},
            )
        return report

    def release(
        self,
        run_payload: RunRef | Mapping[str, Any],
        previous: dict[str, Any] | None = None,
        time_left: Callable[[], float] | None = None,
        tags_result: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sends the held removals: every person this run held synced again from Efficy (no gate), then the
        query-tag mirror again if the Tags step held untags. Answers `more: True` when it ran out of time (called
        again). A person a real-time burst held whom this run's pages read again was held again by them (and
        counted by the gate); one they did not read (deleted in Efficy: pages never read them) stays held, as
        does anything an older run held, until a run with `--allow-removals`, which releases every held key.
        Releasing the whole lot sent a burst of Efficy deletes the real-time breaker had held, unjudged."""
        previous = previous or {}
        fs = self.full_sync
        run = fs._run(run_payload)
        done = {"released": int(previous.get("released", 0)), "more": False}
        if run.dry_run or not run.active:
            return done
        cfg = fs.run_config(run)  # held to the sync conditions of a version applied since (run_config.py)
        if allows_removals(run):
            keys = list(self.held.keys(run.integration_id))
        else:
            keys = list(self.held.held_by(run.integration_id, held_source(run)))
        if keys:
            efficy = fs.efficy_for(cfg)
            apsis = fs._apsis(cfg, run.max_concurrency)  # the account's shared budget
            syncer = PersonSyncer(
                cfg, cast("ApsisClient", apsis), fs.states, email_lookup=efficy.find_contacts_by_email
            )
            for start in range(0, len(keys), RELEASE_CHUNK):
                if start and time_left is not None and time_left() < RELEASE_RESERVE_SECONDS:
                    return {**done, "more": True}
                chunk = keys[start : start + RELEASE_CHUNK]
                persons = efficy.get_persons(chunk, needed_fields(cfg))
                states = fs.states.get_many(run.integration_id, chunk)
                counters: Counter[str] = Counter()
                for key in chunk:
                    outcome = syncer.sync(key, persons.get(key), states.get(key))
                    # what the release sent, and whom it could not (a held opt-out APSIS refused is in the report)
                    sent = ("consent", "tag", "deleted", "failed", "stale")
                    counters.update({k: v for k, v in tally(outcome).items() if k.startswith(sent)})
                self.held.forget(run.integration_id, chunk)
                fs.runs.add_once(
                    run.integration_id, run.run_id, f"release-{chunk[0]}", {**counters, "released": len(chunk)}
                )
                done["released"] += len(chunk)
        if (tags_result or {}).get("held") and not previous.get("tags_done"):
            result = fs.tags(run_payload, time_left=time_left, hold=False, after=previous.get("tags_next"))
            fs.runs.add_once(
                run.integration_id,
                run.run_id,
                f"release-tags-{previous.get('calls', 0)}",
                {f"tag-:{tag}": int(c.get("removed", 0)) for tag, c in result.get("tags", {}).items()},
            )
            if result.get("more"):
                calls = int(previous.get("calls", 0)) + 1
                return {**done, "more": True, "calls": calls, "tags_next": result.get("next")}
        if allows_removals(run):
            self.breaker.reset(run.integration_id)
        return {**done, "tags_done": True}
