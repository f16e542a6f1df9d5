"""Bringing one person in APSIS One in line with Efficy: map, diff against what we pushed, send, remember.

The worker of real-time sync, the page worker of full sync and the opt-out write-back all end here, so all
follow the same rules (conditions, consent safety, smallest set of APSIS calls). Errors that retrying cannot
fix are recorded on the person (and shown by `explain` / `health`) instead of being retried for ever, but only
when they are about this person's data (a value APSIS One refuses: `errors.acknowledgeable`); transient ones
and failures of the integration itself (credentials, permissions, an unknown section, an answer we cannot
read) propagate, so the queue or the state machine retries them and the DLQ reports them.

Destructive steps rest on positive evidence only: `person=None` (delete / untag per `on_delete`) is what the
Efficy client returns for a person two reads agree is gone, and a person whose record lacks a field the sync
conditions read is refused (an error) rather than judged, so a malformed answer can neither fail the
conditions (and be untagged or deleted per `on_condition_lost`) nor pass them.

Consent safety: the state a caller passes in carries the person's APSIS opt-outs (the store merges them in);
`person_plan` lets an unconfirmed one win over any membership. When a newer CRM change opts the person in again, the
record is retired here, after the opt-in is stored. The echo of our own write-back (Efficy's webhook for the
removal the write-back made) finds the state already at that Efficy stamp, so it sends nothing.

Concurrency (a write-back, a full-sync page and a real-time message may sync the same person at once):
- the state is stored only if it is still the revision we planned against; otherwise we plan again against
  what the other sync stored (ConflictingWrite), so nobody's record of what APSIS holds is overwritten;
- right before an opt-in goes out, the stored state and opt-outs are read again (a page reads its chunk at once:
  `fresh`); a change means plan again; then the opt-in's slot is stored as unknown (a write-ahead: a page's go
  together), so a state write failing after the call (DynamoDB throttled, a 5xx) cannot leave an opt-in in
  APSIS that the retry, reading "never opted in", never withdraws;
- if a newer Efficy change was stored while this older read was being sent, the consents we touched are marked
  unknown (the next sync sends its decision again) and RacedWrite asks the caller for a fresh read (the
  real-time worker makes it at once: APSIS may hold the older read's opt-in until then);
- what reached APSIS before a failure is kept in the state, so no opt-in we sent is ever forgotten.

E-mail changes: the profile key is K_CONTACT (crm-id keyspace) and APSIS One keeps consents per profile, so a
new address keeps the person's consents, and the old address, replaced on the profile, is no longer reached by
anything this integration manages. The one risk is a new address that another synced person's profile already
holds (APSIS may treat the address as the same contact): that change is held back, the old address is
cleared from the profile, and the conflict is kept on the state (`email_conflict`, error category
"email_conflict"), counted in the `EmailConflicts` metric and shown by `explain`, never merged silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .clients.apsis import ApsisClient
from .clients.apsis_scope import consents_or_gone
from .clients.errors import ApiError, EfficyBusinessError, NotFound, RacedWrite, TransientError, acknowledgeable
from .config import EMAIL_ATTRIBUTE, IntegrationConfig
from .existing_optouts import first_opt_ins, held_optouts, worth_reading
from .mapping import Desired, Skip, map_person
from .observability import MetricUnit, metrics
from .person_plan import (
    Operation,
    PatchAttributes,
    PatchTags,
    SetConsent,
    plan_for_delete,
    plan_for_skip,
    plan_operations,
)
from .pii import hash_key, mask_email
from .safety import RemovalGate, gated
from .send import Sent, send_operations
from .state import EmailConflict, PersonState, consent_key, utc_now, value_hash
from .state_updates import (
    announced_state,
    deleted_state,
    email_needs_check,
    failed_state,
    gone_from_apsis,
    raced_state,
    skipped_state,
    synced_state,
    unconfirmed_state,
)
from .store.persons import ConflictingWrite, StaleWrite
from .store.protocols import PersonStates

MAX_ATTEMPTS = 5  # plans per sync when concurrent syncs keep storing the person's state


#: what became of one person: "parked" = held for a running full sync (worker.py), "stale" = a newer change
#: overtook this one, "dry_run" = operations planned but not sent
OutcomeResult = Literal["synced", "unchanged", "skipped", "deleted", "failed", "stale", "dry_run", "parked"]


@dataclass
class Outcome:
    person_key: int
    result: OutcomeResult
    operations: list[Any] = field(default_factory=list)
    reason: str = ""
    error_category: str = ""
    notices: list[str] = field(default_factory=list)  # e.g. "email_conflict": worth a look, not a failure
    removals: list[Any] = field(default_factory=list)  # what it removes (or would), for the breaker's counts
    held: bool = False  # the removals were held back by the breaker (not sent, not in the stored state)


class PersonSyncer:
    def __init__(
        self,
        cfg: IntegrationConfig,
        apsis: ApsisClient,
        states: PersonStates,
        *,
        dry_run: bool = False,
        email_lookup: Callable[[str], list[int]],
        clock: Callable[[], str] | None = None,
        removal_gate: RemovalGate | None = None,
    ) -> None:
        """`email_lookup`: Efficy contacts holding an address (`connections.email_lookup` builds the
        integration's Efficy client when an e-mail change first needs it). `clock`: UTC ISO time, stamped on
        the opt-ins we send. `removal_gate`: the breaker (safety.py), asked before any removal goes out; the
        write-back of an APSIS opt-out passes the real-time one minus the person's own decision (optout_gate)."""
        self.cfg = cfg
        self.removal_gate = removal_gate
        self.apsis = apsis
        self.states = states
        self.dry_run = dry_run
        self._email_lookup = email_lookup
        self._clock = clock or utc_now

    def sync(
        self,
        key: int,
        person: dict[str, Any] | None,
        state: PersonState | None,
        *,
        query_tags: set[str] | None = None,
        fresh: bool = False,
    ) -> Outcome:
        """`person` is Efficy's current record (None when Efficy no longer has it); `state` what we stored.
        `fresh`: the caller read `state` consistently just before this call (a full-sync page re-reads each
        chunk of persons at once), so the first plan makes no second read of its own before an opt-in. If another
        sync stored the state since it was read, the plan is made again against what it stored."""
        if person is not None:
            self._check_readable(key, person)
        result = None if person is None else map_person(self.cfg, person, query_tags=query_tags)
        stamp = "" if person is None else str(person.get("D_CHANGE", ""))
        for _ in range(MAX_ATTEMPTS):
            try:
                if result is None:
                    return self._deleted(key, state)
                if isinstance(result, Skip):
                    return self._skip(key, result, stamp, state)
                return self._apply(key, result, state, recheck=not fresh)
            except ConflictingWrite:
                state, fresh = self.states.get(self.cfg.integration_id, key), False
        raise TransientError(f"person {hash_key(key)}: the stored state kept changing; try again later")

    def _check_readable(self, key: int, person: dict[str, Any]) -> None:
        """A record without a field the conditions read is a malformed (or misconfigured) answer, not a person
        who fails them: raise, so the change is retried and reported instead of untagging or deleting."""
        missing = sorted({c.field for c in self.cfg.sync_conditions if c.field not in person})
        if missing:
            raise EfficyBusinessError(
                f"Efficy's record of person {hash_key(key)} lacks the condition field(s) {missing}: not judged",
                code="INCOMPLETE_ANSWER",
            )

    def _skip(self, key: int, result: Skip, stamp: str, state: PersonState | None) -> Outcome:
        ops, removals, held = self._gated(
            key, plan_for_skip(result, state, self.cfg.on_condition_lost, managed_tags=self.cfg.managed_tags()), state
        )
        done = self._execute(ops)
        if state is not None and self._profile_gone(key, state, ops, done):  # deleted in APSIS: nothing to withdraw
            return self._skip(key, result, stamp, gone_from_apsis(state))
        if done.error is not None:
            return self._failed(key, state, done.error, ops, done.ops, done.unsure)
        new_state = skipped_state(self.cfg.integration_id, key, state, stamp, result, ops)
        outcome = Outcome(key, "skipped", ops, reason=result.reason, removals=removals, held=held)
        return self._store(outcome, new_state, state)

    def _gated(self, key: int, ops: list[Operation], state: PersonState | None) -> tuple[list[Any], list[Any], bool]:
        return gated(key, ops, state, None if self.dry_run else self.removal_gate)

    def _apply(self, key: int, desired: Desired, state: PersonState | None, *, recheck: bool = True) -> Outcome:
        result, conflict = self._email_change(key, desired, state)
        ops, removals, held = self._gated(key, plan_operations(result, state), state)
        ops = self._record_existing_optouts(key, ops, state)
        read = state
        if not self.dry_run and any(isinstance(op, SetConsent) and op.type == "opt-in" for op in ops):
            state = self._check_unchanged(key, state, ops, reread=recheck)
        done = self._execute(ops)
        if state is not None and self._profile_gone(key, state, ops, done):
            # deleted in APSIS One behind our back: planned again as a new profile, with the CRM's consents and
            # tags (a consent or tag change alone met 404 on every try, and the attribute path re-created the
            # profile without the consents the state said were there)
            return self._apply(key, desired, gone_from_apsis(state), recheck=recheck)  # the CRM's, not held back
        if done.error is not None:
            if state is not read and state is not None:  # the write-ahead's unknowns give way to what the error says
                new = read is None
                read = (read or PersonState(integration_id=state.integration_id, person_key=str(key))).model_copy(
                    update={"revision": state.revision}
                )
                return self._failed(key, read, done.error, ops, done.ops, done.unsure, rewrite=True, new=new)
            return self._failed(key, state, done.error, ops, done.ops, done.unsure)
        new_state = synced_state(state, result, ops, self._clock(), conflict)
        outcome = Outcome(key, "synced" if ops else "unchanged", ops, removals=removals, held=held)
        if conflict is not None:
            outcome.notices.append("email_conflict")
            outcome.reason = new_state.error_detail or ""
            if not self.dry_run:
                metrics.add_metric(name="EmailConflicts", unit=MetricUnit.Count, value=1)
        return self._store(outcome, new_state, state)

    def _profile_gone(self, key: int, state: PersonState, ops: list[Operation], done: Sent) -> bool:
        """APSIS's own 404 to a call on a profile we created, confirmed by its consents read answering that the
        profile does not exist: positive evidence, never an error's text (a 404 for a deleted tag is no such
        thing). Asked once: the state it leads to no longer says the profile exists."""
        error = done.error
        if self.dry_run or not state.exists_in_apsis or not isinstance(error, NotFound):
            return False
        failed = ops[len(done.ops)] if len(done.ops) < len(ops) else None
        if not error.answered or not isinstance(failed, PatchAttributes | SetConsent | PatchTags):
            return False
        return consents_or_gone(self.apsis, str(key)) is None  # the section and keyspace still there

    def _record_existing_optouts(self, key: int, ops: list[Operation], state: PersonState | None) -> list[Operation]:
        """Before the first opt-in of a slot, an opt-out APSIS already holds there is recorded, and the person
        planned again with it (ConflictingWrite): never overwritten by an opt-in (existing_optouts.py). A dry run
        reads too (a GET changes nothing) and shows what the real run would send: no opt-in over such an opt-out."""
        slots = first_opt_ins(ops, state)
        if not slots or not worth_reading(self.cfg, state, preview=self.dry_run):
            return ops
        found = held_optouts(self.apsis, str(key), slots, self._clock)
        if not found:
            return ops
        if self.dry_run:
            return [op for op in ops if not (isinstance(op, SetConsent) and consent_key(op.topic, op.channel) in found)]
        stored = [s for s, r in found.items() if self.states.record_optout(self.cfg.integration_id, key, s, r)]
        if stored:
            metrics.add_metric(name="ExistingOptOutsKept", unit=MetricUnit.Count, value=len(stored))
        fresh = self.states.get(self.cfg.integration_id, key)
        if stored or (fresh.optouts if fresh else {}) != (state.optouts if state else {}):
            # ours, or one the opt-out route stored since `state` was read (a newer one refused ours)
            raise ConflictingWrite(f"person {hash_key(key)}: APSIS holds opt-outs we never heard of; planning again")
        # nothing new to plan with (a newer record, since retired, refused ours): still no opt-in over it
        return [op for op in ops if not (isinstance(op, SetConsent) and consent_key(op.topic, op.channel) in found)]

    def _check_unchanged(
        self, key: int, state: PersonState | None, ops: list[Operation], *, reread: bool = True
    ) -> PersonState | None:
        """Right before an opt-in goes out: if another sync stored the person, or an APSIS opt-out was recorded,
        since `state` was read, plan again (ConflictingWrite) rather than send an opt-in that may be outdated
        (one consistent read, unless the caller read it just now); then the write-ahead (announced_state),
        conditional on the same revision: the state to go on with (a page's: page_states.GroupCommit)."""
        fresh = self.states.get(self.cfg.integration_id, key) if reread else state
        seen = [(s.revision, s.optouts) if s is not None else (0, {}) for s in (state, fresh)]
        if seen[0] != seen[1]:
            raise ConflictingWrite(f"person {hash_key(key)}: changed since read; planning again before an opt-in")
        intent = announced_state(state, self.cfg.integration_id, key, ops, self._clock())
        if intent is None:
            return state
        try:
            self.states.announce(intent)
        except StaleWrite:  # ConflictingWrite too: stored meanwhile, plan again against it
            raise ConflictingWrite(f"person {hash_key(key)}: changed since read; planning again") from None
        return intent.model_copy(update={"revision": intent.revision + 1})

    # ---- e-mail changes --------------------------------------------------------------------------------
    def _email_change(
        self, key: int, desired: Desired, state: PersonState | None
    ) -> tuple[Desired, EmailConflict | None]:
        """Holds back a new address that another synced person's profile already holds (see module docstring).
        Costs one Efficy look-up and one state read, only when the address changes or a conflict is pending."""
        if not email_needs_check(desired, state):
            return desired, None
        address = desired.attributes.get(EMAIL_ATTRIBUTE)
        new_hash = value_hash(address)
        holders = self._holders_of(key, str(address), new_hash)
        if not holders:
            return desired, None
        conflict = EmailConflict(
            address=mask_email(str(address)),
            address_hash=new_hash,
            other_profiles=holders,
            change_stamp=desired.change_stamp,
        )
        held_back = dataclasses.replace(desired, attributes={**desired.attributes, EMAIL_ATTRIBUTE: None})
        return held_back, conflict

    def _holders_of(self, key: int, address: str, address_hash: str) -> list[str]:
        """Profile keys, other than this person's, to which we pushed this very address."""
        others = [k for k in self._email_lookup(address) if k != key]
        if not others:
            return []
        states = self.states.get_many(self.cfg.integration_id, others)
        return [
            str(k)
            for k, other in sorted(states.items())
            if other.exists_in_apsis and other.attribute_hashes.get(EMAIL_ATTRIBUTE) == address_hash
        ]

    # ---- APSIS calls -----------------------------------------------------------------------------------
    def _execute(self, ops: list[Operation]) -> Sent:
        """Send the operations in order (send.py: create + attributes in one call where APSIS allows it): the
        ones APSIS took, the error that stopped the rest, and the ones that may have reached APSIS."""
        if self.dry_run:
            return Sent(list(ops))
        return send_operations(self.apsis, ops, combine=self.cfg.apsis.create_with_attribute_patch)

    # ---- outcomes --------------------------------------------------------------------------------------
    def _store(self, outcome: Outcome, state: PersonState, before: PersonState | None = None) -> Outcome:
        """Remember the new state. If a newer change was stored meanwhile and we sent something, APSIS may hold
        this older read's data unknown to the stored state: it is told what we sent, and RacedWrite makes the
        caller sync again from a fresh read (an opt-out stored meanwhile must not stay behind our opt-in)."""
        if self.dry_run:
            outcome.result = "dry_run" if outcome.operations else outcome.result
            return outcome
        if not outcome.operations and _same_state(before, state):
            return outcome  # nothing sent and nothing new to remember: a re-sync of an unchanged person costs no write
        try:
            self.states.put(state)
        except ConflictingWrite:
            raise  # sync() plans again against the stored state
        except StaleWrite:
            outcome.result = "stale"
            if not outcome.operations:
                return outcome
            self._reconcile(state.integration_id, outcome.person_key, outcome.operations)
            raise RacedWrite(
                f"person {hash_key(outcome.person_key)} changed in Efficy while an older read was synced; "
                "syncing again from a fresh read"
            ) from None
        self._store_optouts(before, state)
        return outcome

    def _reconcile(self, integration_id: str, key: int, sent: list[Operation]) -> None:
        reconcile_sent(self.states, integration_id, key, sent, self._clock())

    def _store_optouts(self, before: PersonState | None, after: PersonState) -> None:
        """Opt-out records the diff changed: confirmed ones updated, ones a newer CRM opt-in ended retired.
        Each write is conditional on the record we read, so an opt-out recorded meanwhile is never touched."""
        if before is None:
            return
        for slot, old in before.optouts.items():
            new = after.optouts.get(slot)
            if new == old:
                continue
            if new is None:
                self.states.retire_optout(after.integration_id, after.person_key, slot, old, expected_at=old.at)
            else:
                self.states.update_optout(after.integration_id, after.person_key, slot, new, expected_at=old.at)

    def _failed(
        self,
        key: int,
        state: PersonState | None,
        error: ApiError,
        ops: list[Operation],
        sent: list[Operation],
        unsure: list[Operation] | None = None,
        *,
        rewrite: bool = False,
        new: bool = False,
    ) -> Outcome:
        """Records the failure with what did reach APSIS before it (so no opt-in we sent is forgotten), and what
        may have (`unsure`: a call that timed out, marked unknown so the next sync sends its decision again).
        Only a failure about this person's data is the outcome (recorded, and the change acknowledged); any
        other error is raised again afterwards: the queue or the state machine retries, and the DLQ reports it.
        `rewrite`: a write-ahead was stored (`_check_unchanged`); `state` is the state before it, to be stored
        with what the error says reached APSIS, even when nothing did (`new`: there was none; none is kept)."""
        final = acknowledgeable(error)
        unsure = unsure or []
        failed = failed_state(
            self.cfg.integration_id, key, state, error, sent, self._clock(), final=final, unsure=unsure
        )
        outcome = Outcome(key, "failed", ops, reason=str(error), error_category=error.category)
        if rewrite and new and not (sent or final or unsure) and state is not None:
            # the write-ahead stood for a person never stored, and nothing reached APSIS: none kept
            with contextlib.suppress(StaleWrite):  # stored meanwhile by another sync: theirs stands
                self.states.withdraw(state)
        elif not self.dry_run and (sent or final or unsure or rewrite):
            try:
                self.states.put(failed)
            except StaleWrite:  # a newer or concurrent state was stored: it must not forget what we sent
                outcome.result = "stale"
                if sent or unsure:
                    self._reconcile(failed.integration_id, key, [*sent, *unsure])
        if not final:
            raise error
        return outcome

    def _deleted(self, key: int, state: PersonState | None) -> Outcome:
        """Efficy deleted the person: delete, untag or leave the APSIS profile (per integration), keep a tombstone."""
        mode = self.cfg.on_delete
        ops = plan_for_delete(state, mode, managed_tags=self.cfg.managed_tags())
        ops, removals, held = self._gated(key, ops, state)
        done = self._execute(ops)
        if done.error is not None:
            return self._failed(key, state, done.error, ops, done.ops, done.unsure)
        outcome = Outcome(key, "deleted", ops, reason=f"deleted in Efficy (on_delete={mode})")
        outcome.removals, outcome.held = removals, held
        return self._store(outcome, deleted_state(self.cfg.integration_id, key, state, ops))


def reconcile_sent(
    states: PersonStates, integration_id: str, key: int, sent: list[Operation], now: str, *, unconfirmed: bool = False
) -> None:
    """Marks what we sent as unknown in the (newer) stored state: whether APSIS now holds our value or the
    newer sync's depends on which call landed last, so the next sync sends its decision for them again. Every
    writer whose state write is refused after its APSIS calls went out calls this (the per-person path, an
    import's rows): otherwise an opt-in it sent is held by APSIS and known to nobody, and never withdrawn.
    `unconfirmed`: an import that never reported back sent it (state_updates.unconfirmed_state): a person with
    no stored state gets one."""
    for _ in range(MAX_ATTEMPTS):
        stored = states.get(integration_id, key)
        marked = (
            unconfirmed_state(stored, integration_id, key, sent, now)
            if unconfirmed
            else (raced_state(stored, sent, now) if stored is not None else None)
        )
        if marked is None:
            return
        try:
            states.put(marked)
            return
        except StaleWrite:  # a ConflictingWrite too: read the newest and mark it
            continue


def log_fields(outcome: Outcome) -> dict[str, Any]:
    """What a log line may say about a sync: the person as a hash, never e-mail or phone."""
    fields = {
        "person": hash_key(outcome.person_key),
        "result": outcome.result,
        "operations": [type(op).__name__ for op in outcome.operations],
        "error_category": outcome.error_category or None,
    }
    if outcome.notices:
        fields["notices"] = list(outcome.notices)
    return fields


#: what a re-read of an unchanged person changes: not worth a write. The read times may stay those of the read
#: that stored the state: the same D_CHANGE at both reads means nothing changed in between, so a snapshot read
#: in between holds the same data and may count as newer (consent.read_order) without harm.
_VOLATILE = {"updated_at", "revision", "asked_at", "answered_at"}


def _same_state(before: PersonState | None, after: PersonState) -> bool:
    """True when storing `after` would change nothing but its timestamp: same Efficy change stamp, same pushed
    state, same outcome. Only a state that was stored before (has a revision) can be skipped."""
    if before is None or not before.revision:
        return False
    return before.model_dump(exclude=_VOLATILE) == after.model_dump(exclude=_VOLATILE)
