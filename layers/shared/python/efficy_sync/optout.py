"""Opt-outs made in APSIS One, written back to Efficy (DESIGN §2 and §5).

APSIS One has no public consent webhook; a Marketing Automation flow per event (Listen on "Email - Unsubscribe",
"Email - Abuse" or "SMS - Unsubscribe", then a Webhook node) calls our route with a static token (header or
`token` URL parameter) and the fields the user composes, as JSON, a form or GET parameters
(docs/apsis-optout-automation.md). The route checks the token in constant time, validates the fields, and puts
one message on the opt-out queue; it answers 202 only once SQS holds it.

The write-back worker, per message:
1. finds the person: the profile key is K_CONTACT; without one, every Efficy contact whose synced address
   (EMAIL1) is the e-mail address (several matches are all opted out, and said so in the log and the
   `OptOutSeveralContacts` metric; for an SMS opt-out several are ambiguous: nobody, dead-lettered). With
   both, the key's person must not have another address in Efficy: if it has, the opt-out is recorded but
   nobody is taken out of a CRM profile (`OptOutAddressMismatch`, alarmed);
2. records the opt-out first (time, source "apsis", event, subscription and channel) in the person's OPTOUTS
   item, beside the sync state, so no concurrent sync can overwrite it and every sync from now on sees it;
3. removes the person from the CRM profile mapped to each subscription and channel (`email.abuse`: every
   mapped e-mail subscription of the section);
4. reads the person back and confirms the record with the Efficy stamp that shows them out of the profile;
5. syncs the person to APSIS One at that stamp (profile tags follow membership), so the webhook Efficy sends
   for our own removal finds nothing left to send. A removal that sync plans beyond the person's own decision
   (a delete or untag of a tightened sync condition) is judged by the real-time breaker (optout_gate.py).
Any failure fails the message: SQS redelivers it with a growing delay and, after the queue's maxReceiveCount,
moves it to the DLQ (alarmed): an opt-out is never dropped. Every step is idempotent, so a retry repeats
them safely; a duplicate delivery of the same unsubscribe is recognised by its time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .clients.errors import EfficyBusinessError, TransientError
from .config import IntegrationConfig
from .config.names import EMAIL_FIELD
from .consent import ANSWERED_AT, ASKED_AT, OptOutRecord
from .mapping import needed_fields
from .observability import count, logger
from .optout_event import CHANNELS as CHANNELS  # the route's names stay importable from `optout`
from .optout_event import EVENTS as EVENTS
from .optout_event import FIELDS as FIELDS
from .optout_event import MAX_BODY_BYTES as MAX_BODY_BYTES
from .optout_event import TOKEN_PARAMETER as TOKEN_PARAMETER
from .optout_event import Channel as Channel
from .optout_event import OptOutAuthError as OptOutAuthError
from .optout_event import OptOutEvent as OptOutEvent
from .optout_event import OptOutPayloadError as OptOutPayloadError
from .optout_event import check_token as check_token
from .optout_event import parse_event as parse_event
from .optout_gate import OptOutGate
from .optout_intake import Accepted as Accepted  # the route's side stays importable from `optout`
from .optout_intake import OptOutMessage as OptOutMessage
from .optout_intake import Slot as Slot
from .optout_intake import SlotRef as SlotRef
from .optout_intake import accept as accept
from .optout_intake import slots_for as slots_for
from .pii import hash_key
from .state import consent_key, utc_now
from .sync import Outcome, PersonSyncer
from .values import ascii_domain

SOURCE = "apsis"


class OptOutUnmatched(Exception):
    """No Efficy contact has the address: retried (Efficy may not know the person yet), then dead-lettered."""


class OptOutAmbiguous(OptOutUnmatched):
    """An SMS opt-out whose only identification is an e-mail address several contacts hold: the address says
    nothing about whose phone sent STOP, so nobody is taken out of a CRM profile; dead-lettered for a person to
    look at (the APSIS profile keeps its opt-out)."""


class StillMember(TransientError):
    """Efficy still shows the person in the profile after our removal (someone added them back meanwhile)."""

    category = "efficy_still_member"


class MembershipUnknown(TransientError):
    """Efficy's answer did not say which CRM profiles hold the person (no or unreadable profile rows): the
    removal cannot be confirmed on that, so it is retried, never taken as done."""

    category = "efficy_membership_unknown"


# ---- the write-back -------------------------------------------------------------------------------------------


class EfficyPort(Protocol):
    def find_contacts_by_email(self, email: str) -> list[int]: ...
    def remove_from_profile(self, key: int, profile_id: int) -> None: ...
    def get_persons(self, keys: list[int], fields: list[str] | None = None) -> dict[int, dict[str, Any]]: ...


class OptOutStore(Protocol):
    def get(self, integration_id: str, person_key: int | str) -> Any: ...
    def record_optout(self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord) -> bool: ...
    def update_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool: ...


@dataclass
class WriteBackResult:
    persons: list[int]
    matched_by: Literal["profile_key", "email"]
    slots: list[Slot]
    recorded: dict[int, list[str]] = field(default_factory=dict)  # newly recorded slot keys (others: duplicates)
    missing: list[int] = field(default_factory=list)  # not (any more) in Efficy: recorded, nothing to remove
    confirmed_stamps: dict[int, str] = field(default_factory=dict)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    skipped_slots: list[str] = field(default_factory=list)  # no longer mapped by the config
    superseded: list[int] = field(default_factory=list)  # opted in again by a newer CRM change: nothing to do

    by_address_after_key: int = 0  # contacts found by the address when the profile key's contact was gone

    @property
    def several_contacts(self) -> bool:
        return (self.matched_by == "email" and len(self.persons) > 1) or self.by_address_after_key > 1


@dataclass
class Removal:
    done: list[Slot]  # slots whose CRM profile the person was taken out of
    live: dict[str, OptOutRecord]  # the person's live opt-outs, read right before: the ones step 4 may confirm
    gone: bool = False  # Efficy no longer has the contact
    superseded: bool = False  # no opt-out of these slots holds any more


class WriteBack:
    """The worker's steps, callable one by one (the interleaving tests run them between other actors')."""

    #: Efficy codes meaning the contact itself is gone, when the Efficy port does not say (its
    #: `not_found_codes`, the integration's `efficy.error_codes.not_found`, win)
    gone_codes = frozenset({"RECORD_NOT_FOUND"})

    def __init__(
        self,
        cfg: IntegrationConfig,
        efficy: EfficyPort,
        states: OptOutStore,
        syncer: PersonSyncer | None = None,
        *,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.cfg = cfg
        self.efficy = efficy
        self.states = states
        self.syncer = syncer
        self.clock = clock

    def process(self, message: OptOutMessage) -> WriteBackResult:
        """Every step for every person; raises (the message is retried) until all of them are done."""
        try:
            result = self.find(message)
        except Exception:
            self.record_only(message)  # the address check read Efficy and failed: the opt-out holds all the same
            raise
        self._write_back(list(result.persons), message, result)
        if result.matched_by == "profile_key" and message.email and result.slots and result.missing == result.persons:
            # the key's contact is gone (merged into another, deleted): the contacts with the profile's address
            # are who opted out, as for an opt-out that gives only the address (step 1)
            gone = set(result.persons)
            others = [k for k in self._holders(message.email, message) if k not in gone]
            if others:
                count("OptOutKeyGoneMatchedByEmail")
                result.by_address_after_key = len(others)
                result.persons.extend(others)
                self._write_back(others, message, result)
        return result

    def _write_back(self, keys: list[int], message: OptOutMessage, result: WriteBackResult) -> None:
        """Steps 2 to 5 for each of `keys`."""
        for key in keys:
            self.record(key, message, result)
            if not result.slots:  # only subscriptions no mapping covers: recorded, nothing to write back
                continue
            removal = self.remove(key, result.slots)
            if removal.gone:
                result.missing.append(key)
                continue
            if removal.superseded:
                result.superseded.append(key)
                continue
            person = self.confirm(key, removal.done, removal.live)
            if person is None:
                result.missing.append(key)
                continue
            result.confirmed_stamps[key] = str(person.get("D_CHANGE", ""))
            outcome = self.sync(key, person, result.slots)
            if outcome is not None:
                result.outcomes[key] = outcome

    def record_only(self, message: OptOutMessage) -> None:
        """Step 2 alone, when Efficy is known to be down: the opt-out holds from now on; the retry writes it
        back. A message without a profile key needs Efficy to find the person, so it waits for the retry."""
        if message.profile_key is not None:  # no address check: it needs Efficy, and the record must not wait
            self.record(message.profile_key, message, self.find(message, check_address=False))

    def slots(self, message: OptOutMessage) -> tuple[list[Slot], list[str]]:
        """The message's slots as the config maps them now; ones not mapped are recorded, not written back.

        Nor is a slot whose CRM profile also backs a subscription or channel the message does not opt out of:
        taking the person out of that profile would withdraw the other consent too (an e-mail unsubscribe
        turned into an SMS opt-out). Recorded, so APSIS keeps the opt-out; counted for a person to look at."""
        found, skipped = [], []
        wanted = {(ref.topic.casefold(), ref.channel) for ref in message.slots}
        for ref in message.slots:
            mapping = self.cfg.consent_mapping_for(ref.topic, ref.channel)
            if mapping is None:
                skipped.append(consent_key(ref.topic, ref.channel))
                continue
            shared = [
                m
                for m in self.cfg.consent_mappings
                if m.crm_profile == mapping.crm_profile and (m.subscription.casefold(), m.channel) not in wanted
            ]
            if shared:
                count("OptOutSharedProfile")
                logger.warning(
                    "opt-out not written back: its CRM profile also backs another subscription or channel",
                    extra={
                        "crm_profile": mapping.crm_profile,
                        "also": [consent_key(m.subscription, m.channel) for m in shared],
                    },
                )
                skipped.append(consent_key(mapping.subscription, ref.channel))
                continue
            found.append(Slot(mapping.subscription, ref.channel, mapping.crm_profile))  # the mapping's spelling
        return found, skipped

    def find(self, message: OptOutMessage, *, check_address: bool = True) -> WriteBackResult:
        slots, skipped = self.slots(message)
        if message.profile_key is not None:
            if check_address and slots and message.email and self._other_address(message.profile_key, message.email):
                # the key's Efficy person has another address than the profile that opted out: taking them out
                # of a CRM profile would opt out someone else. Recorded (the APSIS profile keeps its opt-out,
                # never overwritten), not written back; counted and logged for a person to look at.
                count("OptOutAddressMismatch")
                logger.warning(
                    "opt-out not written back: the profile key's Efficy person has another e-mail address",
                    extra={"person": hash_key(message.profile_key)},
                )
                mismatch = skipped + [slot.key for slot in slots]
                return WriteBackResult([message.profile_key], "profile_key", [], skipped_slots=mismatch)
            return WriteBackResult([message.profile_key], "profile_key", slots, skipped_slots=skipped)
        if not message.email:
            raise ValueError("an opt-out message needs a profile key or an e-mail address")
        keys = self._holders(message.email, message)
        if not keys and not slots:
            # only subscriptions no mapping covers, and nobody to record them for: done (no retry, no DLQ)
            return WriteBackResult([], "email", slots, skipped_slots=skipped)
        if not keys:
            raise OptOutUnmatched("no Efficy contact has the opted-out address")
        return WriteBackResult(keys, "email", slots, skipped_slots=skipped)

    def _holders(self, address: str, message: OptOutMessage) -> list[int]:
        """The contacts whose synced address (EMAIL_FIELD, the one APSIS One holds) is `address`. Efficy's look-up
        also finds the address in a contact's other e-mail fields: that contact never got our mail there, and
        did not opt out. For an SMS opt-out, several holders are no evidence of whose phone it was
        (OptOutAmbiguous): judged on the message's channels, not on the slots written back, because a slot only
        recorded (unmapped, or a CRM profile shared with e-mail) is still an opt-out recorded for each holder."""
        found = sorted(dict.fromkeys(int(k) for k in self.efficy.find_contacts_by_email(address)))
        if not found:
            return []
        persons = self.efficy.get_persons(found, [EMAIL_FIELD])
        wanted = _address_key(address)
        holders = [k for k in found if _address_key(str((persons.get(k) or {}).get(EMAIL_FIELD) or "")) == wanted]
        if len(found) > len(holders):
            count("OptOutOtherFieldHolders", len(found) - len(holders))
        if len(holders) > 1 and any(ref.channel == "sms" for ref in message.slots):
            count("OptOutAmbiguous")
            raise OptOutAmbiguous(f"an SMS opt-out identified only by an e-mail address {len(holders)} contacts hold")
        return holders

    def _other_address(self, key: int, address: str) -> bool:
        """True only on positive evidence: Efficy has the person and an e-mail address that is not `address`
        (compared without case or surrounding spaces). A person gone or without an address proves nothing."""
        person = self.efficy.get_persons([key], needed_fields(self.cfg)).get(key)
        held = _address_key(str((person or {}).get(EMAIL_FIELD) or ""))
        return bool(held) and held != _address_key(address)

    def record(self, key: int, message: OptOutMessage, result: WriteBackResult) -> None:
        """Step 2: store the opt-out before Efficy is touched (unless this one, or a newer one, already is).

        A subscription no mapping covers is recorded too, with nothing to write back: if a mapping to it is added
        later, the person stays opted out (consent.decide) until the CRM shows them out of the profile and back in,
        instead of being opted in again by the first sync that knows the mapping."""
        recorded = []
        wanted = [(slot.key, True) for slot in result.slots] + [(key_, False) for key_ in result.skipped_slots]
        for slot_key, write_back in wanted:
            record = OptOutRecord(
                at=message.occurred_at,
                source=SOURCE,
                event=message.event,
                awaiting_writeback=write_back,
                recorded_at=self.clock(),
            )
            if self.states.record_optout(self.cfg.integration_id, key, slot_key, record):
                recorded.append(slot_key)
            elif not write_back:
                self._no_write_back(key, slot_key, record.at)
        result.recorded[key] = recorded

    def _no_write_back(self, key: int, slot_key: str, at: str) -> None:
        """This opt-out was recorded awaiting its write-back by an earlier attempt (recorded before Efficy could
        be read: an outage), and now will not be written back (the address check found another person, or the
        mapping is gone). Left awaiting, only the write-back could confirm it, and none will run: the person
        would stay opted out for good, even once the CRM shows them out of the profile and back in."""
        state = self.states.get(self.cfg.integration_id, key)
        live = state.optouts.get(slot_key) if state is not None else None
        if live is not None and live.awaiting_writeback and not live.confirmed and live.at == at:
            done = live.model_copy(update={"awaiting_writeback": False})
            self.states.update_optout(self.cfg.integration_id, key, slot_key, done, expected_at=live.at)

    def remove(self, key: int, slots: list[Slot]) -> Removal:
        """Step 3: read the person's live opt-outs, then take them out of the CRM profile of each slot whose
        opt-out still awaits its write-back. Read right before, so a slot another write-back already confirmed
        is left alone (removing again could undo a CRM user's newer opt-in); a slot without a live record was
        opted in again by a newer CRM change since this opt-out (a late duplicate) and is left alone too."""
        state = self.states.get(self.cfg.integration_id, key)
        live = dict(state.optouts) if state is not None else {}
        todo = awaiting(slots, live)
        gone_codes = getattr(self.efficy, "not_found_codes", self.gone_codes)
        for profile in dict.fromkeys(slot.crm_profile for slot in todo):
            try:
                self.efficy.remove_from_profile(key, profile)
            except EfficyBusinessError as exc:
                # "gone" acknowledges the opt-out without writing it back: only on a code, confirmed by a read
                # (get_persons reports a person absent only when a second read agrees; otherwise it raises)
                if exc.code is not None and exc.code in gone_codes and key not in self.efficy.get_persons([key]):
                    return Removal(todo, live, gone=True)
                raise
        return Removal(todo, live, superseded=not in_force(slots, live))

    def confirm(self, key: int, slots: list[Slot], expected: dict[str, OptOutRecord]) -> dict[str, Any] | None:
        """Step 4: read the person back (None: gone); confirm the record of each slot written back, as read in
        step 3, with the stamp that shows the person out. Raises StillMember if a profile still holds them (the
        retry removes them again), MembershipUnknown if the answer does not show their profiles."""
        person = self.efficy.get_persons([key], needed_fields(self.cfg)).get(key)
        if person is None:
            return None
        if person.get("profiles") is None:
            raise MembershipUnknown("Efficy's answer does not show the person's CRM profiles: removal unconfirmed")
        profiles = {int(p) for p in person["profiles"]}
        still = sorted({slot.crm_profile for slot in slots} & profiles)
        if still:
            raise StillMember(f"Efficy still shows the person in CRM profile(s) {still} after the removal")
        stamp = str(person.get("D_CHANGE", ""))
        for slot in slots:
            record = expected.get(slot.key)
            if record is None or record.confirmed:
                continue
            done = record.model_copy(
                update={
                    "awaiting_writeback": False,
                    "confirmed": True,
                    "confirmed_stamp": stamp,
                    "efficy_stamp": stamp,
                    # when we read the snapshot that shows the person out (consent.OptOutRecord)
                    "confirmed_asked_at": person.get(ASKED_AT) or None,
                    "confirmed_answered_at": person.get(ANSWERED_AT) or None,
                    "crm_profile": slot.crm_profile,  # out of this one: a mapping moved later is no re-add
                }
            )
            self.states.update_optout(self.cfg.integration_id, key, slot.key, done, expected_at=record.at)
        return person

    def sync(self, key: int, person: dict[str, Any], slots: list[Slot] | None = None) -> Outcome | None:
        """Step 5: bring APSIS One in line with the person as Efficy now shows them. Removals it plans that are
        not the person's own decision (`slots`) are judged by the real-time breaker (optout_gate.py)."""
        if self.syncer is None:
            return None
        if isinstance(self.syncer.removal_gate, OptOutGate):
            self.syncer.removal_gate.for_slots(slots or [])
        return self.syncer.sync(key, person, self.states.get(self.cfg.integration_id, key))


def in_force(slots: list[Slot], live: dict[str, OptOutRecord]) -> list[Slot]:
    """The slots whose opt-out still holds (a live record: this one or a newer one)."""
    return [slot for slot in slots if slot.key in live]


def awaiting(slots: list[Slot], live: dict[str, OptOutRecord]) -> list[Slot]:
    """The slots whose write-back is still to be done. Once Efficy confirmed one, removing the person again (on
    a retry, or for a duplicate) could undo a CRM user's newer opt-in."""
    return [slot for slot in slots if slot.key in live and live[slot.key].awaiting_writeback]


def _address_key(address: str) -> str:
    """An address as compared: no case, no surrounding spaces, an internationalised domain in its ASCII form
    (APSIS holds the form we sent, jane@xn--mller-kva.de, Efficy the one a user typed, jane@müller.de)."""
    return ascii_domain(address.strip()).casefold()
