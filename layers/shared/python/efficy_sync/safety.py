"""The blast-radius breaker: count what a sync would remove and decide whether it may go out (issue 15).

A mapping mistake (a wrong CRM profile, a condition that suddenly fails) can unsubscribe, untag or delete
thousands of people in one run. So every sync path that removes something counts its removals first:
- a *removal* is an opt-out of a consent APSIS holds as given, a tag taken away, or a profile deleted. An
  opt-out that confirms an opt-out made in APSIS (the person unsubscribed there: the state carries its record)
  is not one: withdrawing consent is never held back;
- the run is *halted* when, for any consent slot, tag or the profiles as a whole, the removals reach
  `min_removals` and exceed `max_removal_percent` of the persons holding it (the base), so one person does
  not block a small integration and a large one is not emptied quietly.

Pure Python (no AWS): the full-sync gate (fullsync/breaker.py) and the real-time burst gate
(store/removals.py) feed it counts. The real-time gate judges the real-time worker's syncs and the opt-out
write-back's (optout_gate.py): one burst across both paths is counted together.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .person_plan import DeleteProfile, Operation, PatchTags, SetConsent
from .state import PersonState, find_optout

#: counter name prefixes: a removal and the base it is judged against
OPTOUT, UNTAG, DELETE = "rm:optout:", "rm:untag:", "rm:delete"
OPTED_IN, TAGGED, PROFILES = "base:optin:", "base:tagged:", "base:profiles"
#: run counter set by Begin when the admin confirmed removals (`--allow-removals`: any number)
ALLOW_COUNTER = "allow_removals"
#: run counter set by Begin when the admin confirmed up to N removals (`--allow-removals-up-to N`), and the prefix
#: of the counters naming each kind it raises and to what: those the run the admin read was over on
#: (breaker.confirmable), each up to N or the count that run showed for it, whichever is smaller (confirmation)
CONFIRMED_COUNTER, CONFIRM_PREFIX = "allow_removals_up_to", "confirm:"
#: run counters that carry the thresholds the full-sync gate used (the report shows the verdict from them)
PERCENT_COUNTER, MIN_COUNTER, HALT_COUNTER = "breaker_percent_x100", "breaker_min_removals", "breaker_halt"


def _known(state: PersonState | None) -> bool:
    return state is not None and state.exists_in_apsis


def is_removal(op: Operation, state: PersonState | None) -> bool:
    """Whether `op` takes something away that APSIS holds for this person (see module docstring)."""
    if isinstance(op, DeleteProfile):
        return _known(state)
    if isinstance(op, PatchTags):
        return _known(state) and not all(op.tags.values())
    if isinstance(op, SetConsent) and op.type == "opt-out" and _known(state):
        assert state is not None
        # an APSIS opt-out (under whatever spelling of the topic it was recorded) is never held
        return find_optout(state.optouts, op.topic, op.channel) is None
    return False


def split_removals(ops: list[Operation], state: PersonState | None) -> tuple[list[Operation], list[Operation]]:
    """(what may go now, the removals). A tag PATCH that adds and removes is split in two."""
    kept: list[Operation] = []
    removals: list[Operation] = []
    for op in ops:
        if not is_removal(op, state):
            kept.append(op)
        elif isinstance(op, PatchTags):
            added: dict[str, bool] = {t: v for t, v in op.tags.items() if v}
            if added:
                kept.append(PatchTags(op.key, added))
            removals.append(PatchTags(op.key, {t: v for t, v in op.tags.items() if not v}))
        else:
            removals.append(op)
    return kept, removals


class RemovalGate(Protocol):
    """The breaker as a sync sees it: may these removals of one person go out now? False holds them back:
    they are neither sent nor recorded in the person's state, so the next sync plans them again."""

    def admit(self, key: int, removals: list[Operation]) -> bool: ...


def gated(
    key: int, ops: list[Operation], state: PersonState | None, gate: RemovalGate | None
) -> tuple[list[Operation], list[Operation], bool]:
    """(what to send, the removals among `ops`, whether `gate` held them back). No gate: all of `ops` go."""
    kept, removals = split_removals(ops, state)
    if not removals or gate is None or gate.admit(key, removals):
        return ops, removals, False
    return kept, removals, True


def removal_counts(removals: Iterable[Operation]) -> Counter[str]:
    """Counter names per removal: rm:optout:<topic>|<channel>, rm:untag:<tag>, rm:delete."""
    counts: Counter[str] = Counter()
    for op in removals:
        if isinstance(op, SetConsent):
            counts[f"{OPTOUT}{op.topic}|{op.channel}"] += 1
        elif isinstance(op, PatchTags):
            for tag, on in op.tags.items():
                if not on:
                    counts[f"{UNTAG}{tag}"] += 1
        elif isinstance(op, DeleteProfile):
            counts[DELETE] += 1
    return counts


def base_counts(states: Iterable[PersonState]) -> Counter[str]:
    """What a set of persons holds in APSIS according to their stored state: opted-in persons per consent slot,
    tagged persons per tag, profiles."""
    counts: Counter[str] = Counter()
    for state in states:
        if not state.exists_in_apsis:
            continue
        counts[PROFILES] += 1
        for slot, kind in state.consents.items():
            if kind == "opt-in":
                counts[f"{OPTED_IN}{slot}"] += 1
        for tag in {tag for tag, on in state.tags.items() if on} | set(state.tags_unknown):
            # a tag whose call never reported back may be set: taking it away again is a retry, not a new removal
            counts[f"{TAGGED}{tag}"] += 1
    return counts


def base_name(removal: str) -> str:
    """The base a removal counter is judged against."""
    if removal.startswith(OPTOUT):
        return OPTED_IN + removal[len(OPTOUT) :]
    if removal.startswith(UNTAG):
        return TAGGED + removal[len(UNTAG) :]
    return PROFILES


def limit(base: int, max_percent: float, min_removals: int) -> int:
    """The most removals of one kind a run may make without a confirmation."""
    return max(min_removals - 1, math.floor(base * max_percent / 100))


@dataclass
class Verdict:
    halt: bool
    #: per removal counter: {"removals", "base", "limit", "over"}
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)


def judge(
    removals: Mapping[str, int],
    base: Mapping[str, int],
    max_percent: float,
    min_removals: int,
    confirmed: Mapping[str, int] | None = None,
) -> Verdict:
    """Whether removals this large need an admin's confirmation (module docstring). `confirmed`: per removal
    counter, the count the admin confirmed (`--allow-removals-up-to N`, after reading a halted run's counts): that
    kind's limit is raised to it, so the counts the admin saw go out, and a run that would remove more (the CRM
    changed again since) halts again instead of removing whatever it finds. A kind the admin never saw over its
    limit keeps its limit."""
    confirmed = confirmed or {}
    lines: dict[str, dict[str, Any]] = {}
    for name, n in sorted(removals.items()):
        if n <= 0:
            continue
        held = int(base.get(base_name(name), 0))
        allowed = max(limit(held, max_percent, min_removals), int(confirmed.get(name, 0)))
        lines[name] = {"removals": int(n), "base": held, "limit": allowed, "over": n > allowed}
    return Verdict(any(line["over"] for line in lines.values()), lines)


def describe(name: str) -> str:
    """A removal counter as a report line names it."""
    if name.startswith(OPTOUT):
        topic, _, channel = name[len(OPTOUT) :].rpartition("|")
        return f"opt-outs {topic} [{channel}]"
    if name.startswith(UNTAG):
        return f"tag removals {name[len(UNTAG) :]}"
    return "profile deletes"


def removals_of(counters: Mapping[str, int]) -> dict[str, int]:
    """The removal counters of a run's counters."""
    return {k: int(v) for k, v in counters.items() if (k.startswith((OPTOUT, UNTAG)) or k == DELETE) and v}


def confirmed_of(counters: Mapping[str, int]) -> dict[str, int]:
    """Per removal counter, the count an admin confirmed for it (CONFIRM_PREFIX counters of a run)."""
    return {k[len(CONFIRM_PREFIX) :]: int(v) for k, v in counters.items() if k.startswith(CONFIRM_PREFIX) and v}


def bases_of(counters: Mapping[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in counters.items() if k.startswith((OPTED_IN, TAGGED)) or k == PROFILES}


def held_after(counters: Mapping[str, int]) -> dict[str, int]:
    """The bases the real-time breaker judges against until the next full sync: what the persons held before the
    run, the profiles at least as many as the run synced (created, updated or unchanged). Counted before the run
    only, an integration's first full sync left a base of 0 profiles, and every real-time window's limit was
    min_removals - 1 until a second full sync: most legitimate removals held and alarmed."""
    bases = bases_of(counters)
    synced = sum(int(counters.get(name, 0) or 0) for name in ("created", "updated", "unchanged"))
    bases[PROFILES] = max(bases.get(PROFILES, 0), synced)
    return bases


def verdict_of(counters: Mapping[str, int]) -> dict[str, Any] | None:
    """The breaker's section of a run report, from the run's counters (None before the gate ran)."""
    if PERCENT_COUNTER not in counters:
        return None
    percent, minimum = counters[PERCENT_COUNTER] / 100, counters.get(MIN_COUNTER, 1)
    confirmed = int(counters.get(CONFIRMED_COUNTER, 0))
    verdict = judge(removals_of(counters), bases_of(counters), percent, minimum, confirmed_of(counters))
    return {
        "would_halt": verdict.halt,
        "removals": verdict.lines,
        "halted": bool(counters.get(HALT_COUNTER)),
        "allowed": bool(counters.get(ALLOW_COUNTER)),
        "confirmed_up_to": confirmed,
        # per kind, the limit confirmed: below N where the report the admin confirmed showed fewer (breaker.py)
        "confirmed": confirmed_of(counters),
        "max_removal_percent": percent,
        "min_removals": minimum,
    }
