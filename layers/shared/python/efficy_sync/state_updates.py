"""The person's state to store once APSIS One took (some of) the planned calls: one home for every state update.

`person_plan` decides which calls to make; this module says what APSIS holds once they were made, for every
way a sync ends (synced, skipped, deleted in Efficy, failed half-way, raced by a newer sync) and for the bulk
import, which stores the same states without going through `PersonSyncer`. Nothing here calls APSIS, Efficy or
DynamoDB, so each rule is testable on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .config import EMAIL_ATTRIBUTE
from .consent import confirm, read_time
from .mapping import Desired, Skip
from .person_plan import (
    CreateProfile,
    DeleteProfile,
    Operation,
    PatchAttributes,
    PatchTags,
    SetConsent,
    is_stale,
)
from .state import (
    UNKNOWN,
    EmailConflict,
    PersonState,
    consent_key,
    find_optout,
    known_hash,
    unsure_hash,
    utc_now,
    value_hash,
)

if TYPE_CHECKING:
    from .clients.errors import ApiError


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def apply_operations(state: PersonState | None, result: Desired | Skip, ops: list[Operation]) -> PersonState:
    """The state to store once `ops` (planned from `result` and `state`) have succeeded."""
    key = result.profile_key or (state.person_key if state else "")
    new = (state or PersonState(integration_id=result.integration_id, person_key=key)).model_copy(deep=True)
    stamp = result.change_stamp
    if is_stale(stamp, state, result.asked_at, result.answered_at):
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
    # the snapshot the state now reflects ("": unknown, never a bound)
    new.asked_at, new.answered_at = result.asked_at, result.answered_at
    new.error_category = new.error_detail = None
    new.updated_at = utc_now()
    return new


def record_operation(new: PersonState, op: Operation, *, clear_on_create: bool = True) -> None:
    """What `op` made APSIS One hold, written into `new` (in place)."""
    if isinstance(op, CreateProfile):
        new.exists_in_apsis = True
        if clear_on_create:
            new.attribute_hashes, new.consents, new.tags = {}, {}, {}  # a new profile holds nothing yet
            new.tags_unknown = []
    elif isinstance(op, PatchAttributes):
        for name, value in op.attributes.items():
            if value is None:
                new.attribute_hashes.pop(name, None)
            else:
                new.attribute_hashes[name] = value_hash(value)
    elif isinstance(op, SetConsent):
        new.consents[consent_key(op.topic, op.channel)] = op.type
    elif isinstance(op, PatchTags):
        record_tags_sent(new, op.tags)
    elif isinstance(op, DeleteProfile):
        new.exists_in_apsis = False
        new.attribute_hashes, new.consents, new.tags, new.tags_unknown = {}, {}, {}, []


def record_tags_sent(new: PersonState, tags: dict[str, bool]) -> None:
    """Tags APSIS confirmed (in place): known again."""
    new.tags.update(tags)
    if new.tags_unknown:
        new.tags_unknown = [tag for tag in new.tags_unknown if tag not in tags]


def with_tags(state: PersonState, tags: dict[str, bool], **update: Any) -> PersonState:
    """A copy of `state` that records `tags` as sent and confirmed."""
    new = state.model_copy(update=update, deep=True)
    record_tags_sent(new, tags)
    return new


def _confirm_optouts(new: PersonState, desired: Desired) -> None:
    """Keeps what Efficy showed about APSIS opt-outs: confirmed once the person is out of the profile, dropped
    once an explicit newer membership opted them in again."""
    slots = {slot: crm_type == "opt-in" for slot, crm_type in desired.consents.items()} | desired.memberships
    for (topic, channel), member in slots.items():
        found = find_optout(new.optouts, topic, channel)  # under the spelling it was recorded with
        if found is None:
            continue
        stored, old = found
        read = (desired.change_stamp, desired.asked_at, desired.answered_at)
        record = confirm(old, member, *read, crm_profile=desired.crm_profiles.get((topic, channel)))
        if record is None:
            continue
        if record.confirmed and member and new.consents.get(consent_key(topic, channel)) == "opt-in":
            del new.optouts[stored]
        else:
            new.optouts[stored] = record


def stamp_opt_ins(state: PersonState, ops: list[Operation], now: str) -> PersonState:
    """When we sent each opt-in: an APSIS opt-out close to it may have been overwritten by it (store docstring).
    Anything that sends opt-ins outside PersonSyncer (bulk import) should stamp them too."""
    slots = [consent_key(op.topic, op.channel) for op in ops if isinstance(op, SetConsent) and op.type == "opt-in"]
    if not slots:
        return state
    return state.model_copy(update={"opted_in_at": {**state.opted_in_at, **dict.fromkeys(slots, now)}})


def email_needs_check(desired: Desired, state: PersonState | None) -> bool:
    """Whether the person's address changes on a profile we created (or a conflict is pending): the one case
    PersonSyncer checks that no other synced profile holds the new address. The import writer sends such a
    person one by one for that check (an import would merge two profiles' addresses silently)."""
    known = state if state is not None and state.exists_in_apsis else None
    address = desired.attributes.get(EMAIL_ATTRIBUTE)
    if known is None or not address:
        return False
    # the address we last knew APSIS held: an unsure first address is still a first address (state.known_hash), an
    # unsure change is checked unless the CRM gives the address we knew (held back, its clear met a 5xx: checked)
    old_hash = known_hash(known.attribute_hashes.get(EMAIL_ATTRIBUTE))
    return known.email_conflict is not None or (old_hash is not None and old_hash != value_hash(address))


def announced_state(
    state: PersonState | None, integration_id: str, key: int, ops: list[Operation], now: str
) -> PersonState | None:
    """The state stored right before opt-ins go out (a write-ahead): their slots read unknown, as after a call
    that timed out. Should the state write after the calls fail (DynamoDB throttled past the SDK's retries, a
    5xx), the retry of the change still knows an opt-in may be in APSIS: a person the CRM took out of the profile
    meanwhile is withdrawn, where "never opted in" left APSIS's opt-in for good. None when the stored state
    already reads so (nothing to write)."""
    opt_ins: list[Operation] = [op for op in ops if isinstance(op, SetConsent) and op.type == "opt-in"]
    base = state or PersonState(integration_id=integration_id, person_key=str(key))
    # the profile too: a withdrawal is planned only for a profile the state says exists (person_plan._known)
    marked = mark_unknown(base, [*(op for op in ops if isinstance(op, CreateProfile)), *opt_ins])
    if not opt_ins or (marked.consents, marked.exists_in_apsis) == (base.consents, base.exists_in_apsis):
        return None
    return stamp_opt_ins(marked, opt_ins, now).model_copy(update={"updated_at": _now()})


def synced_state(
    state: PersonState | None, desired: Desired, ops: list[Operation], now: str, conflict: EmailConflict | None
) -> PersonState:
    """After a sync that sent `ops`: what they made APSIS hold, and an e-mail change held back (`conflict`),
    kept as the error "email_conflict" so `explain` and `health` show it. A snapshot older than the stored one
    (nothing planned) leaves it as it is: it kept the stored read times, so the store took it, and a late read
    made a tombstone, a skip or a failure read "synced" with its error cleared."""
    if state is not None and not ops and is_stale(desired.change_stamp, state, desired.asked_at, desired.answered_at):
        return state
    update: dict[str, Any] = {
        "last_outcome": "synced",
        "error_category": None,
        "error_detail": None,
        "skip_reason": None,
        "email_conflict": conflict,
        "updated_at": _now(),
    }
    if conflict is not None:
        update.update(error_category="email_conflict", error_detail=describe_conflict(conflict))
    return stamp_opt_ins(apply_operations(state, desired, ops), ops, now).model_copy(update=update)


def describe_conflict(conflict: EmailConflict) -> str:
    """What an operator reads about a held-back e-mail change (masked address, other profiles' keys)."""
    profiles = ", ".join(conflict.other_profiles)
    return (
        f"e-mail change held back: the new address {conflict.address} already belongs to APSIS One profile(s) "
        f"{profiles}; not merged. The old address was removed from this profile. Correct the address in Efficy "
        "(or merge the contacts there) and the next change syncs it."
    )


def _base_state(integration_id: str, key: int, state: PersonState | None, stamp: str) -> PersonState:
    if state is not None:
        return state.model_copy(update={"change_stamp": stamp or state.change_stamp})
    return PersonState(integration_id=integration_id, person_key=str(key), change_stamp=stamp)


def skipped_state(
    integration_id: str, key: int, state: PersonState | None, stamp: str, skip: Skip, ops: list[Operation]
) -> PersonState:
    """A person who fails the sync conditions (or has no usable key): the reason, and what the withdrawal
    (`ops`: the opt-outs of CRM profiles left, untag or delete, per `on_condition_lost`) left in APSIS."""
    base = _base_state(integration_id, key, state, stamp)
    update: dict[str, Any] = {
        "last_outcome": "skipped",
        "skip_reason": skip.reason,
        "asked_at": skip.asked_at,
        "answered_at": skip.answered_at,
        "error_category": None,
        "error_detail": None,
        "updated_at": _now(),
    }
    if any(isinstance(op, DeleteProfile) for op in ops):
        update.update(exists_in_apsis=False, attribute_hashes={}, consents={}, tags={}, tags_unknown=[])
        return base.model_copy(update=update)
    opted_out = {consent_key(op.topic, op.channel): op.type for op in ops if isinstance(op, SetConsent)}
    if opted_out:
        update["consents"] = {**base.consents, **opted_out}
    if any(isinstance(op, PatchTags) for op in ops):
        untagged = _untagged(ops)
        update["tags"] = {tag: False for tag in [*base.tags, *sorted(untagged - set(base.tags))]}
        update["tags_unknown"] = [tag for tag in base.tags_unknown if tag not in untagged]
    return base.model_copy(update=update)


def _untagged(ops: list[Operation]) -> set[str]:
    """The tags `ops` took away (confirmed by APSIS, so known again)."""
    return {tag for op in ops if isinstance(op, PatchTags) for tag, on in op.tags.items() if not on}


def deleted_state(integration_id: str, key: int, state: PersonState | None, ops: list[Operation]) -> PersonState:
    """The tombstone of a person deleted in Efficy: the stored stamp kept, the profile gone if `ops` deleted it.

    Its read times are now (our clock, after Efficy's answer that the person is gone): kept from the snapshot
    before, they made any snapshot read between that one and the delete look newer than the tombstone (a
    write-back's, a cancelled run's page), and its late sync created the deleted person's profile again."""
    base = _base_state(integration_id, key, state, state.change_stamp if state else "")
    seen = read_time()
    update: dict[str, Any] = {"last_outcome": "deleted", "updated_at": _now(), "asked_at": seen, "answered_at": seen}
    if any(isinstance(op, DeleteProfile) for op in ops):
        update.update(exists_in_apsis=False, attribute_hashes={}, consents={}, tags={}, tags_unknown=[])
    elif untagged := _untagged(ops):
        update["tags_unknown"] = [tag for tag in base.tags_unknown if tag not in untagged]
    return base.model_copy(update=update)


def gone_from_apsis(state: PersonState) -> PersonState:
    """The state of a person whose profile APSIS One no longer has (deleted there behind our back: by hand, an
    erasure): nothing we pushed is there any more, so the next plan creates the profile with every attribute,
    consent and tag the CRM gives. The opt-out records stay: an opt-out the person made is never answered by an
    opt-in (consent.decide). The revision stays too: the store's conditional write still applies."""
    update: dict[str, Any] = {"attribute_hashes": {}, "consents": {}, "tags": {}, "tags_unknown": [], "opted_in_at": {}}
    return state.model_copy(update={"exists_in_apsis": False, "email_conflict": None, **update})


def failed_state(
    integration_id: str,
    key: int,
    state: PersonState | None,
    error: ApiError,
    sent: list[Operation],
    now: str,
    *,
    final: bool,
    unsure: list[Operation] | None = None,
) -> PersonState:
    """A sync stopped by `error` after APSIS took `sent`: what they made it hold (so no opt-in we sent is
    forgotten), and, only when the failure is `final` (about this person's data), the failure as the outcome.
    `unsure`: calls that may have reached APSIS (a timeout, a 5xx), marked unknown: an opt-in APSIS applied
    although its call timed out is withdrawn by the next sync if the person left the CRM profile meanwhile. A
    delete among them is left to be sent again (the profile is still taken to exist).
    The stored stamp is kept: the change was not applied, so a retry of the same change must still pass."""
    base = state or PersonState(integration_id=integration_id, person_key=str(key), change_stamp="")
    update: dict[str, Any] = {"updated_at": _now()}
    if final:  # otherwise the person's outcome is left as it was: the change is still on its way
        update.update(
            last_outcome="failed",
            error_category=error.category,
            error_detail=f"{type(error).__name__}: {error}"[:500],
        )
    new = stamp_opt_ins(remember(base, sent), sent, now)
    maybe: list[Operation] = [op for op in unsure or [] if not isinstance(op, DeleteProfile)]
    if maybe:
        new = stamp_opt_ins(mark_unknown(new, maybe), maybe, now)
    return new.model_copy(update=update)


def remember(state: PersonState, ops: list[Operation]) -> PersonState:
    """`state` plus what `ops` made APSIS One hold; stamp and outcome unchanged. Unlike a planned sync, creating
    the profile clears nothing here: the state may know calls a concurrent sync made, and forgetting them could
    leave an opt-in nobody withdraws."""
    new = state.model_copy(deep=True)
    for op in ops:
        record_operation(new, op, clear_on_create=False)
    return new


def mark_unknown(state: PersonState, ops: list[Operation]) -> PersonState:
    """`state` with what `ops` touched marked unknown: the next sync sends its decision for those again (a
    consent reads "unknown", which differs from any decision, and is withdrawn if the person is not a member).

    An opt-in on an unknown slot reads APSIS's consents first, as a first opt-in does (existing_optouts.py): APSIS
    may hold an opt-out we never sent (made before the integration, kept by a file that never reported back).
    A tag either way goes to `tags_unknown` (the next sync sends its decision, set or not, again: a tag a 503
    never set was missing for good). For code that does not know that field: a tag we set reads set (taken away
    if the rules no longer want it), one we took away reads not set (set again if wanted)."""
    new = state.model_copy(deep=True)
    for op in ops:
        if isinstance(op, CreateProfile):
            new.exists_in_apsis = True
        elif isinstance(op, PatchAttributes):
            # unsure, not forgotten: a clear (a field emptied in the CRM) whose call met a 5xx was never sent
            # again once the hash was dropped, and APSIS kept the old value (a phone number) for good
            # an address we knew stays a change to check (state_updates.email_needs_check): held back as a conflict, its
            # clear met a 5xx, and the retry sent the other profile's address unchecked
            for name, value in op.attributes.items():
                previous = new.attribute_hashes.get(name)
                if value is None or previous != value_hash(value):  # the value we knew, sent again: held either way
                    new.attribute_hashes[name] = unsure_hash(previous)
        elif isinstance(op, SetConsent):
            new.consents[consent_key(op.topic, op.channel)] = UNKNOWN
        elif isinstance(op, PatchTags):
            for tag, on in op.tags.items():
                if on:
                    new.tags[tag] = True
                else:
                    new.tags.pop(tag, None)
                if tag not in new.tags_unknown:
                    new.tags_unknown.append(tag)
        elif isinstance(op, DeleteProfile):
            new.exists_in_apsis = False
            new.attribute_hashes, new.consents, new.tags, new.tags_unknown = {}, {}, {}, []
    return new


def raced_state(stored: PersonState, sent: list[Operation], now: str) -> PersonState:
    """The newer state another sync stored while an older read sent `sent`: what we touched marked unknown,
    our opt-ins stamped, so the next sync sends its decision for them again."""
    return stamp_opt_ins(mark_unknown(stored, sent), sent, now).model_copy(update={"updated_at": _now()})


def unconfirmed_state(
    state: PersonState | None, integration_id: str, key: int | str, sent: list[Operation], now: str
) -> PersonState | None:
    """The state after `sent` went out in an import that never reported back (the wait timed out, or the step
    failed after the upload): APSIS may still apply the file at any later time, even after the run has ended.
    What it touched is marked unknown, as for a race, so the next sync sends its decision again and a membership
    withdrawn since is withdrawn in APSIS too. A person with no state gets one: otherwise an opt-in the file
    makes later is known to nobody and never withdrawn. None when nothing sent could have created the profile."""
    if state is None:
        if not any(isinstance(op, CreateProfile) for op in sent):
            return None
        state = PersonState(integration_id=integration_id, person_key=str(key))
    return raced_state(state, sent, now)
