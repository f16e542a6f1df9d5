"""The smallest list of APSIS One calls that brings a person from what was last pushed to what the CRM wants.

APSIS allows 10 requests/s per profile key, so all attribute changes go in one PATCH, and an unchanged person
plans no call at all. A snapshot older than the one last applied plans nothing: a late webhook or a full-sync
page read before a real-time change must not roll the person back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from efficy_sync.consent import ConsentType, compare_stamps, confirm, decide
from efficy_sync.mapping import Desired, Skip
from efficy_sync.state import PersonState, consent_key, utc_now, value_hash


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


def is_stale(change_stamp: str, state: PersonState | None) -> bool:
    """True when this snapshot is older than the one last applied (an unknown stamp is never stale)."""
    if state is None or not change_stamp or not state.change_stamp:
        return False
    return compare_stamps(change_stamp, state.change_stamp) < 0


def _known(state: PersonState | None) -> PersonState | None:
    """What APSIS holds according to the state; a profile that does not exist holds nothing."""
    return state if state is not None and state.exists_in_apsis else None


def _attribute_changes(desired: Desired, known: PersonState | None) -> dict[str, Any]:
    hashes = known.attribute_hashes if known else {}
    changes: dict[str, Any] = {}
    for name, value in desired.attributes.items():
        if value is None:
            if name in hashes:
                changes[name] = None
        elif hashes.get(name) != value_hash(value):
            changes[name] = value
    for name in hashes:
        if name not in desired.attributes and name not in desired.skipped_attributes:
            changes[name] = None  # no longer mapped, or no longer known: clear it
    return dict(sorted(changes.items()))


def consent_decisions(desired: Desired, state: PersonState | None) -> dict[tuple[str, str], Any]:
    """(topic, channel) -> (ConsentDecision, last pushed type, confirmed opt-out record) for applicable slots."""
    known = _known(state)
    result: dict[tuple[str, str], Any] = {}
    for (topic, channel), crm_type in sorted(desired.consents.items()):
        key = consent_key(topic, channel)
        member = crm_type == "opt-in"
        last = known.consents.get(key) if known else None
        record = confirm(state.optouts.get(key) if state else None, member, desired.change_stamp)
        result[topic, channel] = (decide(member, last, record, desired.change_stamp), last, record)
    return result


def plan_operations(desired: Desired, state: PersonState | None) -> list[Operation]:
    """Create (if needed), one attribute PATCH, consents, one tag PATCH: in that order, because a consent on
    the email channel needs the address in place first."""
    if is_stale(desired.change_stamp, state):
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
    tags = {t: v for t, v in sorted(desired.tags.items()) if v != bool(known_tags.get(t, False))}
    if tags:
        ops.append(PatchTags(key, tags))
    return ops


def plan_for_skip(
    skip: Skip, state: PersonState | None, on_condition_lost: Literal["leave", "untag", "delete"]
) -> list[Operation]:
    """A skipped person is never created; one who stops matching is left, untagged or deleted as configured."""
    known = _known(state)
    if known is None or on_condition_lost == "leave" or is_stale(skip.change_stamp, state):
        return []
    return _withdraw(known, on_condition_lost)


def plan_for_delete(state: PersonState | None, on_delete: Literal["delete", "untag", "ignore"]) -> list[Operation]:
    """The person was deleted in Efficy."""
    known = _known(state)
    if known is None or on_delete == "ignore":
        return []
    return _withdraw(known, on_delete)


def _withdraw(known: PersonState, how: str) -> list[Operation]:
    if how == "delete":
        return [DeleteProfile(known.person_key)]
    tags = {t: False for t, v in sorted(known.tags.items()) if v}
    return [PatchTags(known.person_key, tags)] if tags else []


def apply_operations(state: PersonState | None, result: Desired | Skip, ops: list[Operation]) -> PersonState:
    """The state to store once `ops` (planned from `result` and `state`) have succeeded."""
    key = result.profile_key or (state.person_key if state else "")
    new = (state or PersonState(integration_id=result.integration_id, person_key=key)).model_copy(deep=True)
    stamp = result.change_stamp
    if is_stale(stamp, state):
        return new
    for op in ops:
        record_operation(new, op)
    if isinstance(result, Desired):
        _confirm_optouts(new, result)
        new.last_outcome, new.skip_reason = "synced", None
    else:
        new.skip_reason = result.reason
        new.last_outcome = "deleted" if any(isinstance(op, DeleteProfile) for op in ops) else "skipped"
    if stamp:
        new.change_stamp = stamp
    new.error_category = new.error_detail = None
    new.updated_at = utc_now()
    return new


def record_operation(new: PersonState, op: Operation, *, clear_on_create: bool = True) -> None:
    """What `op` made APSIS One hold, written into `new` (in place)."""
    if isinstance(op, CreateProfile):
        new.exists_in_apsis = True
        if clear_on_create:
            new.attribute_hashes, new.consents, new.tags = {}, {}, {}  # a new profile holds nothing yet
    elif isinstance(op, PatchAttributes):
        for name, value in op.attributes.items():
            if value is None:
                new.attribute_hashes.pop(name, None)
            else:
                new.attribute_hashes[name] = value_hash(value)
    elif isinstance(op, SetConsent):
        new.consents[consent_key(op.topic, op.channel)] = op.type
    elif isinstance(op, PatchTags):
        new.tags.update(op.tags)
    elif isinstance(op, DeleteProfile):
        new.exists_in_apsis = False
        new.attribute_hashes, new.consents, new.tags = {}, {}, {}


def _confirm_optouts(new: PersonState, desired: Desired) -> None:
    """Keeps what Efficy showed about APSIS opt-outs: confirmed once the person is out of the profile, dropped
    once an explicit newer membership opted them in again."""
    slots = {slot: crm_type == "opt-in" for slot, crm_type in desired.consents.items()} | desired.memberships
    for (topic, channel), member in slots.items():
        key = consent_key(topic, channel)
        record = confirm(new.optouts.get(key), member, desired.change_stamp)
        if record is None:
            continue
        if record.confirmed and member and new.consents.get(key) == "opt-in":
            del new.optouts[key]
        else:
            new.optouts[key] = record
