"""The opt-out route's work (docs/apsis-optout-automation.md): token, fields, the consent mappings they reach,
then one message on the opt-out queue. Kept apart from the write-back (optout.py), which needs the API
clients: the route's Lambda imports only this, so it answers without loading an HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from .config import IntegrationConfig
from .observability import count, logger
from .optout_event import OptOutEvent, OptOutPayloadError, _header, _one, check_token, decode_events, parse_fields
from .optout_time import UNKNOWN_ZONE, TimeFix, naive_zone
from .pii import hash_key, mask_email
from .state import consent_key, utc_now

#: an optional field the call gave but we could not use, set aside (optout_event) -> its counter and log line.
#: The line names the field, never its value (which may be personal, or wrong in a way that would be).
SET_ASIDE = {
    "occurred_at": (
        "OptOutTimeUnreadable",
        "opt-out occurred_at is not a time we can read: the receive time was recorded instead",
    ),
    "email": ("OptOutEmailIgnored", "opt-out email is not a usable address: ignored, the profile_key finds the person"),
    "profile_key": (
        "OptOutForeignKeyIgnored",
        "opt-out profile_key is of another keyspace than apsis.keyspace: ignored, the e-mail address finds the person",
    ),
}

#: how much of a caller's section_discriminator an ignored event's log line keeps (a discriminator is far shorter)
MAX_SECTION_LOGGED = 200


@dataclass(frozen=True)
class Slot:
    """One consent mapping an opt-out reaches: the subscription, the channel and the CRM profile behind them."""

    topic: str
    channel: str
    crm_profile: int

    @property
    def key(self) -> str:
        return consent_key(self.topic, self.channel)


def slots_for(cfg: IntegrationConfig, channel: str, topic: str | None) -> list[Slot]:
    """The mapped slots an opt-out reaches; topic None (abuse report): every mapping on that channel. The topic
    is matched without case (the config checks already treat two spellings as one subscription) and the slot
    carries the mapping's own spelling, the one the state and the write-back know."""
    wanted = topic.casefold() if topic is not None else None
    return [
        Slot(m.subscription, m.channel, m.crm_profile)
        for m in cfg.consent_mappings
        if m.channel == channel and (wanted is None or m.subscription.casefold() == wanted)
    ]


class SlotRef(BaseModel):
    topic: str
    channel: str


class OptOutMessage(BaseModel):
    """One opt-out event on the opt-out queue. The address travels only when there is no profile key to find
    the person by (the queue is encrypted at rest; it is never logged). Every field is bounded by the route's
    checks, so a message is small whatever the caller sent."""

    integration_id: str
    event: str
    profile_key: int | None = None
    email: str | None = None
    slots: list[SlotRef]
    occurred_at: str
    received_at: str = ""


@dataclass
class Accepted:
    accepted: int  # subscription opt-outs now on the queue
    ignored: str | None = None  # why nothing was queued for a valid request
    unmapped: str | None = None  # queued to be recorded only: no consent mapping covers the subscription
    time_fix: TimeFix = None  # occurred_at was in the future, too old or unreadable and replaced by the receive time
    set_aside: tuple[str, ...] = ()  # optional fields given but unusable, ignored (reported by `report_set_aside`)
    #: the time fixes of every event of a call of several (a JSON array), in order
    time_fixes: tuple[TimeFix, ...] = ()
    #: events of the call that were ignored / recorded only (counted per event)
    ignored_events: int = 0
    unmapped_events: int = 0
    #: events of a JSON array refused (each {"index", "field", "error"}), the others taken
    refused: list[dict[str, Any]] = field(default_factory=list)


def report_set_aside(event: OptOutEvent, integration_id: str) -> None:
    """A counter and a warning per optional field the call gave but we could not use (SET_ASIDE): the opt-out was
    kept, but the automation's Webhook node sends something we do not read, which its owner should fix."""
    for name in event.ignored:
        metric, message = SET_ASIDE[name]
        count(metric)
        logger.warning(message, extra={"ignored_field": name, "integration_id": integration_id})


def report_ignored(event: OptOutEvent, section: Any, reason: str) -> None:
    """A warning per ignored event (beside OptOutIgnoredAlarm's counter): the call was answered 202, so APSIS One
    never retries it, and this line is all an operator has to tell a wrongly named section or an unmapped channel
    from a report that truly belongs elsewhere. The person is named by hash_key only (an address, masked, when
    the call gave no key); the section is the caller's text, cut short."""
    person = hash_key(event.profile_key) if event.profile_key is not None else None
    logger.warning(
        "opt-out ignored",
        extra={
            "reason": reason,
            "event": event.event,
            "channel": event.channel,
            "topic": event.topic,
            "section": str(section).strip()[:MAX_SECTION_LOGGED] if section is not None else None,
            "person": person,
            "address": None if person else mask_email(event.email),
        },
    )


def accept(
    cfg: IntegrationConfig,
    headers: Mapping[str, str] | None,
    body: bytes,
    token: str,
    send: Callable[[OptOutMessage], None],
    *,
    query: Mapping[str, Any] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Accepted:
    """Token, fields (JSON, form or URL parameters), mapping, then `send` (which must raise if SQS did not take
    the message). Of a JSON array of events, the valid ones are taken and the wrong ones refused by index
    (`refused`, `[2].profile_key`): the node does not resend a refused call, so one typo must not lose the
    others' opt-outs. A call whose every event is wrong is refused (400 naming the first)."""
    check_token(headers, cfg.apsis.optout_token_header, token, query)
    fields = decode_events(body, content_type=_header(headers, "Content-Type"), query=query)
    max_age = timedelta(hours=cfg.apsis.optout_max_age_hours)
    zone = naive_zone(cfg.apsis.optout_time_zone)
    if zone is None and cfg.apsis.optout_time_zone != UNKNOWN_ZONE:
        logger.warning(
            "apsis.optout_time_zone cannot be loaded here (no time zone database): a time without a zone is read as"
            " the latest it can mean",
            extra={"zone": cfg.apsis.optout_time_zone},
        )
    events: list[tuple[OptOutEvent, Any]] = []
    refused: list[dict[str, Any]] = []
    first_error: OptOutPayloadError | None = None
    for number, one in enumerate(fields):
        try:
            event = parse_fields(one, now=now, max_age=max_age, zone=zone, keyspace=cfg.apsis.keyspace)
            events.append((event, _one(one, "section_discriminator")))
        except OptOutPayloadError as error:
            if len(fields) == 1:
                raise
            where = f"[{number}].{error.field}"
            first_error = first_error or OptOutPayloadError(where, error.problem)
            refused.append({"index": number, "field": where, "error": f"{where}: {error.problem}"})
    if not events and first_error is not None:
        raise first_error
    results = [_accept_one(cfg, event, send, section) for event, section in events]
    if len(results) == 1 and not refused:
        return results[0]
    taken = [r for r in results if not r.ignored]
    return Accepted(
        sum(r.accepted for r in results),
        ignored="; ".join(dict.fromkeys(r.ignored for r in results if r.ignored)) or None,
        unmapped="; ".join(dict.fromkeys(r.unmapped for r in taken if r.unmapped)) or None,
        set_aside=tuple(dict.fromkeys(name for r in results for name in r.set_aside)),
        time_fixes=tuple(r.time_fix for r in results),
        ignored_events=sum(r.ignored_events for r in results),
        unmapped_events=sum(r.unmapped_events for r in results),
        refused=refused,
    )


def _accept_one(
    cfg: IntegrationConfig, event: OptOutEvent, send: Callable[[OptOutMessage], None], section: Any = None
) -> Accepted:
    """`section`: the section_discriminator the call names, if any. A spam report opts the person out of every
    subscription of *its* section: one from another section (a flow copied with this integration's URL) says
    nothing about this section's, and taking the person out of every mapped CRM profile would opt them out on no
    evidence. A topic names its subscription itself, so a topic's event is matched by the topic alone."""
    report_set_aside(event, cfg.integration_id)
    slots = [SlotRef(topic=s.topic, channel=s.channel) for s in slots_for(cfg, event.channel, event.topic)]
    unmapped = None
    foreign = (
        isinstance(section, str) and section.strip() and section.strip().casefold() != cfg.apsis.section.casefold()
    )
    if event.topic is None and foreign:
        slots = []
    if not slots and event.topic is None:
        ignored = (
            f"a spam report from another section than integration {cfg.integration_id}'s"
            if foreign
            else f"no consent mapping for any {event.channel} subscription in integration {cfg.integration_id}"
        )
        report_ignored(event, section, ignored)
        return Accepted(
            0,
            ignored=ignored,
            set_aside=event.ignored,
            time_fixes=(event.time_fix,),
            ignored_events=1,
        )
    if not slots:
        # kept all the same (WriteBack.record): a mapping added later must not opt the person in again
        slots = [SlotRef(topic=event.topic, channel=event.channel)]
        unmapped = (
            f"no consent mapping for subscription {event.topic} on {event.channel} in integration "
            f"{cfg.integration_id}: the opt-out is recorded, not written back to Efficy"
        )
    message = OptOutMessage(
        integration_id=cfg.integration_id,
        event=event.event,
        profile_key=event.profile_key,
        email=event.email,  # with a profile key too: the write-back checks the key's person has this address
        slots=slots,
        occurred_at=event.occurred_at,
        received_at=utc_now(),
    )
    send(message)
    return Accepted(
        len(slots),
        unmapped=unmapped,
        time_fix=event.time_fix,
        set_aside=event.ignored,
        time_fixes=(event.time_fix,),
        unmapped_events=1 if unmapped else 0,
    )
