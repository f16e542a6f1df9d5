"""Consent rules (DESIGN §2). Legal data: these functions are pure so they can be tested exhaustively.

- CRM profile membership means opt-in on the mapped topic and channel; leaving the profile means opt-out.
- An opt-out is only sent to withdraw something: a person never opted in gets no first-time opt-out.
- An opt-out made in APSIS One (unsubscribe) is recorded before it is written back to Efficy. Until Efficy shows
  the person out of the profile (the record is *confirmed*), that opt-out wins over any membership a full sync or
  a late message still sees. Once confirmed, only a membership with a newer change stamp than the confirmation,
  an explicit new opt-in made in Efficy, opts the person in again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from .values import day_first

if TYPE_CHECKING:  # state.py imports this module: the state type is for the checker only
    from .state import PersonState

ConsentType = Literal["opt-in", "opt-out"]
#: an opt-in we sent this close to an APSIS opt-out (before or after) may have overwritten it. Wide, because the
#: automation's `occurred_at` may be when its flow ran rather than the click, and clocks differ; the cost of a
#: wide margin is one redundant opt-out call.
OPT_IN_RACE_MARGIN = timedelta(minutes=10)


# --- change stamps --------------------------------------------------------------------------------------------


def normalise_stamp(stamp: str | None) -> str:
    """'2024-05-01 10:00:00Z' -> '2024-05-01T10:00:00.000000': one fixed-width form, so stamps compare as text.
    An offset is converted to UTC; a naive stamp (Efficy's D_CHANGE) is taken as it is, in ISO or day-first
    form ("05/02/2025 10:00:00", as Efficy's JSON-RPC may send it: as text, 05/02 would sort before 19/01).
    Empty sorts first."""
    return _normalised(stamp or "")


@lru_cache(maxsize=4096)
def _normalised(stamp: str) -> str:
    """Cached: a page stores every person's read and answer times, which share a handful of seconds, and
    parsing them again was about 1 % of a full-sync page's CPU (py-spy, BENCHMARKS.md)."""
    text = stamp.strip()
    if not text:
        return ""
    try:
        parsed = day_first(text) or datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        return text  # unknown shape: compare as given rather than fail a sync over it
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%f")


#: a stored change stamp further ahead of our clock than this is not a time Efficy can have meant (its clock was
#: wrong, or an import set the field): kept as a bound, it would make every later change of the person look older
#: and be dropped. A day covers any time zone of Efficy's naive local stamps.
FUTURE_STAMP_SLACK = timedelta(days=1)


def future_limit(now: datetime | None = None) -> str:
    """The normalised stamp beyond which a stored change stamp is disregarded as a bound (FUTURE_STAMP_SLACK)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC) + FUTURE_STAMP_SLACK
    return moment.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def beyond_now(stamp: str | None, now: datetime | None = None) -> bool:
    """True for a stamp later than future_limit: not evidence that the person's stored data is newer."""
    return normalise_stamp(stamp) > future_limit(now)


#: Efficy person records carry, beside their fields, when we asked for them and when the answer arrived (our
#: clock, normalised like a stamp): keys no Efficy field can have (its field names are upper case).
ASKED_AT = "_asked_at"
ANSWERED_AT = "_answered_at"
#: our functions' clocks agree to well within this (Lambda keeps time with the Amazon Time Sync Service, to
#: within a millisecond or so). Reads closer than this are taken to overlap and the stamps order them, which a
#: change of Efficy's clock can fool: so it is small, not generous.
READ_ORDER_SLACK = timedelta(milliseconds=200)


def read_time(now: datetime | None = None) -> str:
    """Our clock as a normalised stamp (UTC, fixed width): when a snapshot was asked for, or answered."""
    return (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def read_order_bound(moment: str | None, slack: timedelta = -READ_ORDER_SLACK) -> str | None:
    """`moment` (a read time of ours) moved by `slack`, normalised; None when unknown. The store's conditional
    put compares the stored snapshot's read times with these bounds (read_order).

    Why read times and not only Efficy's change stamps: D_CHANGE is Efficy's naive local time. When clocks go
    back (the last Sunday of October in Europe) an edit made at 02:05 in the second pass is stamped earlier
    than one made at 02:50 in the first, and an Efficy server whose clock is corrected does the same; by the
    stamps alone that later edit (a CRM opt-out, say) is "stale" and dropped, in real time and in every full
    sync after it, until the person is edited again, while the snapshot before it, applied late, looks newer
    and opts the person in again. Efficy's data only moves forward, so a snapshot we asked for after another
    one's answer arrived holds data as new as that one or newer, whatever the stamps say. READ_ORDER_SLACK
    keeps the clocks of two functions out of it."""
    if not moment:
        return None
    try:
        shifted = datetime.fromisoformat(normalise_stamp(moment)) + slack
    except ValueError:  # not a time of ours: unknown
        return None
    return shifted.strftime("%Y-%m-%dT%H:%M:%S.%f")


def read_after(asked_at: str | None, answered_at: str | None) -> bool:
    """True when a snapshot asked for at `asked_at` was asked clearly after another one's answer arrived at
    `answered_at` (read_order_bound says why it is then at least as new); False when either time is unknown."""
    bound = read_order_bound(asked_at)
    return bound is not None and bool(answered_at) and normalise_stamp(answered_at) < bound


def read_order(asked_at: str, answered_at: str, other_asked_at: str, other_answered_at: str) -> int | None:
    """1 when this snapshot was read clearly after the other one, -1 clearly before, None when the reads
    overlap or a time is unknown (the change stamps decide then)."""
    if read_after(asked_at, other_answered_at):
        return 1
    if read_after(other_asked_at, answered_at):
        return -1
    return None


def compare_stamps(a: str | None, b: str | None) -> int:
    """-1, 0 or 1 as `a` is older than, as old as, or newer than `b`."""
    na, nb = normalise_stamp(a), normalise_stamp(b)
    return (na > nb) - (na < nb)


def is_newer(a: str | None, b: str | None) -> bool:
    return compare_stamps(a, b) > 0


# --- APSIS opt-outs awaiting Efficy -----------------------------------------------------------------------------


class OptOutRecord(BaseModel):
    """An opt-out made in APSIS One, kept until (and after) Efficy confirms it.

    `at` is when it happened in APSIS. `efficy_stamp` is the person's Efficy change stamp we knew when it was
    recorded; when set, confirmation is measured against it rather than `at`, because Efficy's D_CHANGE is the
    CRM server's local time while `at` comes from APSIS. `confirmed_stamp` is the Efficy stamp that showed the
    person out of the profile, and `confirmed_asked_at`/`confirmed_answered_at` when we read that snapshot (our
    clock): a membership read clearly after it is a new opt-in, one read clearly before it an old one, whatever
    the stamps say (read_order_bound says why).

    `awaiting_writeback`: recorded by the write-back worker before it touched Efficy. Such a record is confirmed
    by that worker alone, with the stamp Efficy shows after its own removal: no snapshot a sync holds can be
    proven newer than the opt-out (APSIS time and Efficy's local time do not compare), so none may confirm it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    at: str
    source: str
    confirmed: bool = False
    confirmed_stamp: str | None = None
    confirmed_asked_at: str | None = None
    confirmed_answered_at: str | None = None
    efficy_stamp: str | None = None
    awaiting_writeback: bool = False
    event: str | None = None  # e.g. "email.unsubscribe", as the APSIS automation reported it
    recorded_at: str | None = None  # when we recorded it (our clock)
    #: the CRM profile the confirmation saw the person out of (the one the slot mapped then; None: recorded
    #: before this was kept). A membership of another profile the slot maps later is no re-add (`other_profile`)
    crm_profile: int | None = None


def other_profile(record: OptOutRecord, crm_profile: int | None) -> bool:
    """Whether the slot now maps another CRM profile than the one `record` was confirmed for: the person may have
    been in it all along, so their membership is no CRM user's opt-in after the opt-out."""
    return record.crm_profile is not None and crm_profile is not None and record.crm_profile != crm_profile


@dataclass(frozen=True)
class ConsentDecision:
    type: ConsentType | None  # None: nothing to send
    reason: str


def decide(
    member: bool,
    last_pushed: ConsentType | Literal["unknown"] | None,
    optout: OptOutRecord | None,
    change_stamp: str,
    asked_at: str = "",
    answered_at: str = "",
    crm_profile: int | None = None,
) -> ConsentDecision:
    """The consent APSIS One should hold for one topic and channel, given the person's CRM membership (read
    from a snapshot stamped `change_stamp`, asked for and answered at our `asked_at` and `answered_at`) of
    `crm_profile`, the CRM profile the slot maps now."""
    if member:
        if optout is not None and not optout.confirmed and optout.source == "apsis-existing":
            return ConsentDecision(
                "opt-out",
                f"APSIS One held an opt-out before any consent was sent there (seen {optout.recorded_at}); kept until "
                "the CRM shows the person out of the profile and back in",
            )
        if optout is not None and not optout.confirmed:
            pending = (
                "the write-back to Efficy is pending"
                if optout.awaiting_writeback
                else "Efficy has not confirmed it yet"
            )
            return ConsentDecision("opt-out", f"opted out in APSIS One at {optout.at} ({optout.source}); {pending}")
        if optout is not None and other_profile(optout, crm_profile):
            return ConsentDecision(
                "opt-out",
                f"opted out in APSIS One at {optout.at}, confirmed out of CRM profile {optout.crm_profile}; the "
                f"subscription now maps CRM profile {crm_profile}: kept until the CRM shows the person out of it "
                "and back in",
            )
        if optout is not None:
            threshold = optout.confirmed_stamp or optout.efficy_stamp or optout.at
            # an opt-in again needs positive evidence: with read times, a membership read clearly after the
            # confirmation (reads that overlap prove nothing); without them, the stamps
            if asked_at and optout.confirmed_answered_at:
                newer = read_after(asked_at, optout.confirmed_answered_at)
            else:
                newer = is_newer(change_stamp, threshold)
            if not newer:
                return ConsentDecision(
                    "opt-out",
                    f"opted out in APSIS One at {optout.at}; this membership (changed {change_stamp or 'unknown'}) "
                    f"is not newer than Efficy's confirmation ({threshold})",
                )
            return ConsentDecision(
                "opt-in", f"member of the CRM profile again since {change_stamp}, after the confirmed opt-out"
            )
        return ConsentDecision("opt-in", "member of the CRM profile")
    if optout is not None:
        return ConsentDecision("opt-out", f"opted out in APSIS One at {optout.at} and not a member of the CRM profile")
    if last_pushed is not None:
        return ConsentDecision("opt-out", "not a member of the CRM profile (any more)")
    return ConsentDecision(None, "not a member of the CRM profile and never opted in: nothing to withdraw")


def confirm(
    record: OptOutRecord | None,
    member: bool,
    change_stamp: str,
    asked_at: str = "",
    answered_at: str = "",
    crm_profile: int | None = None,
) -> OptOutRecord | None:
    """Marks the record confirmed once Efficy shows the person out of the profile (`crm_profile`, the one the
    slot maps now) at a stamp at least as new as the record; a snapshot taken before the opt-out proves nothing.
    A record confirmed for another profile (the mapping was pointed elsewhere since) is confirmed again for this
    one. A record awaiting its write-back is left to the write-back worker (see OptOutRecord)."""
    if record is None or record.awaiting_writeback or member:
        return record
    if record.confirmed and not other_profile(record, crm_profile):
        return record
    threshold = record.efficy_stamp or record.at
    # or a read we asked for after the record was stored (our clock on both sides): D_CHANGE is Efficy's naive
    # local time and `at` APSIS's UTC, which do not compare on a server west of UTC, where a removal made after
    # an opt-out that was never written back looked older than it and the CRM's re-add was overruled for good
    read_later = bool(record.recorded_at) and read_after(asked_at, record.recorded_at)
    if compare_stamps(change_stamp, threshold) < 0 and not read_later:
        return record
    return record.model_copy(
        update={
            "confirmed": True,
            "confirmed_stamp": change_stamp,
            "confirmed_asked_at": asked_at or None,
            "confirmed_answered_at": answered_at or None,
            "crm_profile": crm_profile if crm_profile is not None else record.crm_profile,
        }
    )


def merge_optouts(state: PersonState, records: Mapping[str, OptOutRecord]) -> PersonState:
    """The state as syncs must see it: the live APSIS opt-outs attached, and their slots read as opted out.

    A slot with a live record reads "APSIS One holds an opt-out" (the person opted out there themselves), unless
    we sent an opt-in for it within OPT_IN_RACE_MARGIN of the opt-out or after it: then which one APSIS holds
    is not known (our opt-in may have landed after the click, before the automation told us), and the slot
    reads "unknown", so the next sync sends the opt-out again. The store calls this on every read."""
    if not records:
        return state
    consents = dict(state.consents)
    for slot, record in records.items():
        if consents.get(slot) == "opt-out":
            continue
        sent = state.opted_in_at.get(slot)
        # the person opted out in APSIS One: that is what APSIS holds, unless our opt-in may have come after
        consents[slot] = "unknown" if sent and _close_or_after(sent, record.at) else "opt-out"
    return state.model_copy(update={"optouts": dict(records), "consents": consents})


def _close_or_after(sent: str, at: str) -> bool:
    """Whether an opt-in sent at `sent` may have overwritten the APSIS opt-out made at `at`."""
    try:
        sent_at = datetime.fromisoformat(normalise_stamp(sent))
        opted_out = datetime.fromisoformat(normalise_stamp(at))
    except ValueError:
        return True  # cannot tell: assume the worst
    return sent_at >= opted_out - OPT_IN_RACE_MARGIN
