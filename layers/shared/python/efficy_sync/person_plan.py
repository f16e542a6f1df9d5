"""The smallest list of APSIS One calls that brings a person from what was last pushed to what the CRM wants.

APSIS allows 10 requests/s per profile key, so all attribute changes go in one PATCH, and an unchanged person
plans no call at all. A snapshot older than the one last applied plans nothing: a late webhook or a full-sync
page read before a real-time change must not roll the person back.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from efficy_sync.consent import ConsentType, OptOutRecord, beyond_now, compare_stamps, confirm, decide, read_order
from efficy_sync.mapping import Desired, Skip
from efficy_sync.state import PersonState, consent_key, find_optout, value_hash


@dataclass(frozen=True)
class CreateProfile:
    key: str


@dataclass(frozen=True)
class PatchAttributes:
    key: str
    attributes: dict[str, Any] = field(hash=False)  # None clears an attribute


@dataclass(frozen=True)
class SetConsent:
    key: str
    topic: str
    channel: str
    type: ConsentType


@dataclass(frozen=True)
class PatchTags:
    key: str
    tags: dict[str, bool] = field(hash=False)


@dataclass(frozen=True)
class DeleteProfile:
    key: str


Operation = CreateProfile | PatchAttributes | SetConsent | PatchTags | DeleteProfile


def is_stale(change_stamp: str, state: PersonState | None, asked_at: str = "", answered_at: str = "") -> bool:
    """True when this snapshot is older than the one last applied. When both were read at known times and the
    reads do not overlap, the read order decides (consent.read_order_bound says why); otherwise the change
    stamps do, where an unknown stamp is never stale, nor is any snapshot against a stored stamp beyond our
    clock (consent.beyond_now says why)."""
    if state is None:
        return False
    order = read_order(asked_at, answered_at, state.asked_at, state.answered_at)
    if order is not None:
        return order < 0
    if not change_stamp or not state.change_stamp or beyond_now(state.change_stamp):
        return False
    return compare_stamps(change_stamp, state.change_stamp) < 0


def _known(state: PersonState | None) -> PersonState | None:
    """What APSIS holds according to the state; a profile that does not exist holds nothing."""
    return state if state is not None and state.exists_in_apsis else None


def _attribute_changes(desired: Desired, known: PersonState | None) -> dict[str, Any]:
    """Only mapped attributes are written. One whose mapping was removed (or re-targeted) keeps its value in APSIS
    One: removing a mapping says "stop syncing this", not "erase it for everyone", and a clear would reach every
    profile with no breaker in between. Its hash stays in the state, so mapping it again sends only changed values."""
    hashes = known.attribute_hashes if known else {}
    changes: dict[str, Any] = {}
    for name, value in desired.attributes.items():
        if value is None:
            if name in hashes:
                changes[name] = None  # the CRM field was emptied: positive evidence, clear it
        elif hashes.get(name) != value_hash(value):
            changes[name] = value
    return dict(sorted(changes.items()))


def _optout(state: PersonState | None, topic: str, channel: str) -> OptOutRecord | None:
    """The person's APSIS opt-out of the slot, under whatever spelling of its topic it was recorded."""
    found = find_optout(state.optouts, topic, channel) if state is not None else None
    return found[1] if found else None


def consent_decisions(desired: Desired, state: PersonState | None) -> dict[tuple[str, str], Any]:
    """(topic, channel) -> (ConsentDecision, last pushed type, confirmed opt-out record) for applicable slots."""
    known = _known(state)
    result: dict[tuple[str, str], Any] = {}
    for (topic, channel), crm_type in sorted(desired.consents.items()):
        key = consent_key(topic, channel)
        member = crm_type == "opt-in"
        last = known.consents.get(key) if known else None
        read = (desired.change_stamp, desired.asked_at, desired.answered_at)
        profile = desired.crm_profiles.get((topic, channel))
        record = confirm(_optout(state, topic, channel), member, *read, crm_profile=profile)
        result[topic, channel] = (decide(member, last, record, *read, crm_profile=profile), last, record)
    return result


def plan_operations(desired: Desired, state: PersonState | None) -> list[Operation]:
    """Create (if needed), one attribute PATCH, consents, one tag PATCH: in that order, because a consent on
    the email channel needs the address in place first."""
    if is_stale(desired.change_stamp, state, desired.asked_at, desired.answered_at):
        return []
    known = _known(state)
    key = desired.profile_key
    ops: list[Operation] = []
    if known is None:
        ops.append(CreateProfile(key))
    attributes = _attribute_changes(desired, known)
    if attributes:
        ops.append(PatchAttributes(key, attributes))
    for (topic, channel), (decision, last, _) in consent_decisions(desired, state).items():
        if decision.type is not None and decision.type != last:
            ops.append(SetConsent(key, topic, channel, decision.type))
    known_tags = known.tags if known else {}
    unsure = set(known.tags_unknown) if known else set()
    tags = {t: v for t, v in sorted(desired.tags.items()) if v != bool(known_tags.get(t, False)) or t in unsure}
    if tags:
        ops.append(PatchTags(key, tags))
    return ops


def plan_for_skip(
    skip: Skip,
    state: PersonState | None,
    on_condition_lost: Literal["leave", "untag", "delete"],
    *,
    managed_tags: Collection[str],
) -> list[Operation]:
    """A skipped person is never created; one who stops matching is left, untagged or deleted as configured.
    A condition failed only on an unreadable yes/no value is no evidence they stopped matching: left as is.

    Whatever the conditions and `on_condition_lost` say, a person APSIS One holds who is out of a mapped CRM
    profile is opted out of its subscription (where we opted them in): leaving the profile is a CRM opt-out,
    and it creates nothing. Left opted in, a Robinson-listed person who also left the newsletter stayed
    subscribed in APSIS One for as long as they failed the conditions."""
    known = _known(state)
    if known is None or is_stale(skip.change_stamp, state, skip.asked_at, skip.answered_at):
        return []
    lost = [] if skip.unreadable or on_condition_lost == "leave" else _withdraw(known, on_condition_lost, managed_tags)
    if any(isinstance(op, DeleteProfile) for op in lost):
        return lost  # the profile goes, and its consents with it
    return _opt_outs(skip, known, state) + lost


def _opt_outs(skip: Skip, known: PersonState, state: PersonState | None) -> list[Operation]:
    """The opt-outs of the slots whose CRM profile the skipped person left (consent.decide, as for a synced one:
    nothing where we never opted them in, or already opted them out)."""
    read = (skip.change_stamp, skip.asked_at, skip.answered_at)
    ops: list[Operation] = []
    for topic, channel in skip.left:
        key = consent_key(topic, channel)
        last = known.consents.get(key)
        decision = decide(False, last, confirm(_optout(state, topic, channel), False, *read), *read)
        if decision.type == "opt-out" and last != "opt-out":
            ops.append(SetConsent(known.person_key, topic, channel, "opt-out"))
    return ops


def plan_for_delete(
    state: PersonState | None, on_delete: Literal["delete", "untag", "ignore"], *, managed_tags: Collection[str]
) -> list[Operation]:
    """The person was deleted in Efficy."""
    known = _known(state)
    if known is None or on_delete == "ignore":
        return []
    return _withdraw(known, on_delete, managed_tags)


def _withdraw(known: PersonState, how: str, managed_tags: Collection[str]) -> list[Operation]:
    """Untag takes away only the tags the config sets now (`IntegrationConfig.managed_tags`): one no longer
    mapped stays, as a removed mapping leaves its attribute."""
    if how == "delete":
        return [DeleteProfile(known.person_key)]
    maybe_set = {t for t, v in known.tags.items() if v} | set(known.tags_unknown)
    tags = {t: False for t in sorted(maybe_set) if t in managed_tags}
    return [PatchTags(known.person_key, tags)] if tags else []
