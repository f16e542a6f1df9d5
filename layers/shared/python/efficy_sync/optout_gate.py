"""The blast-radius breaker as the opt-out write-back asks it (safety.py, store/removals.BurstGate).

The write-back syncs each person it took out of a CRM profile (optout.py, step 5). That sync plans what any sync
of the person would: after a sync condition was tightened (`on_condition_lost: delete | untag`) or with
`on_delete`, profile deletes and untags the person's own opt-out has nothing to do with. A campaign's mass
unsubscribe sent those unjudged, where the real-time worker holds the same burst. So the write-back asks the
real-time gate (the same window counter, trip, holds and alarm: one burst across both paths is judged together,
and `full-sync start ID --allow-removals` releases its holds like any real-time one), except for what is the
person's own decision:
- the opt-out that confirms their APSIS opt-out is no removal (safety.is_removal: the state carries its record);
- the tag mirroring a CRM profile the opt-out took them out of (`tags.profiles`) follows their decision too.
Neither is counted, and a person whose sync removes nothing else is never held. When something else is held,
the whole person's removals wait (safety.gated): the APSIS opt-out is already in APSIS One and in Efficy, so
nothing of the opt-out waits; only a tag that mirrors it stays on until the release.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import IntegrationConfig
from .optout_intake import Slot
from .person_plan import Operation, PatchTags
from .safety import RemovalGate


def own_tags(cfg: IntegrationConfig, slots: Iterable[Slot]) -> frozenset[str]:
    """The tags mirroring the CRM profiles of `slots` (the ones an opt-out takes the person out of)."""
    profiles = {slot.crm_profile for slot in slots}
    return frozenset(tag.tag for tag in cfg.tags.profiles if tag.crm_profile in profiles)


def judged(removals: list[Operation], own: frozenset[str]) -> list[Operation]:
    """The removals the breaker judges: all but the untags of `own` tags."""
    out: list[Operation] = []
    for op in removals:
        if isinstance(op, PatchTags):
            rest = {tag: on for tag, on in op.tags.items() if tag not in own}
            if rest:
                out.append(PatchTags(op.key, rest))
        else:
            out.append(op)
    return out


class OptOutGate:
    """safety.RemovalGate for the write-back's syncer: `inner` (the real-time BurstGate) judges what is not the
    person's own decision. `own` is set per person by the write-back (WriteBack.sync) before it syncs them."""

    def __init__(self, cfg: IntegrationConfig, inner: RemovalGate) -> None:
        self.cfg = cfg
        self.inner = inner
        self.own: frozenset[str] = frozenset()

    def for_slots(self, slots: Iterable[Slot]) -> None:
        self.own = own_tags(self.cfg, slots)

    def admit(self, key: int, removals: list[Any]) -> bool:
        rest = judged(removals, self.own)
        return not rest or self.inner.admit(key, rest)
