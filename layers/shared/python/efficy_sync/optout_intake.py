"""The opt-out route's work (docs/apsis-optout-automation.md): token, fields, the consent mappings they reach,
then one message on the opt-out queue. Kept apart from the write-back (optout.py), which needs the API
clients: the route's Lambda imports only this, so it answers without loading an HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from .config import IntegrationConfig
from .observability import count, logger
from .optout_event import OptOutEvent, _header, check_token, decode_fields, parse_fields
from .optout_time import TimeFix
from .state import consent_key, utc_now

#: an optional field the call gave but we could not use, set aside (optout_event) -> its counter and log line.
#: The line names the field, never its value (which may be personal, or wrong in a way that would be).
SET_ASIDE = {
    "occurred_at": (
        "OptOutTimeUnreadable",
        "opt-out occurred_at is not a time we can read: the receive time was recorded instead",
    ),
    "email": ("OptOutEmailIgnored", "opt-out email is not a usable address: ignored, the profile_key finds the person"),
}


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
    """The mapped slots an opt-out reaches; topic None (abuse report): every mapping on that channel."""
    return [
        Slot(m.subscription, m.channel, m.crm_profile)
        for m in cfg.consent_mappings
        if m.channel == channel and (topic is None or m.subscription == topic)
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


def report_set_aside(event: OptOutEvent, integration_id: str) -> None:
    """A counter and a warning per optional field the call gave but we could not use (SET_ASIDE): the opt-out was
    kept, but the automation's Webhook node sends something we do not read, which its owner should fix."""
    for name in event.ignored:
        metric, message = SET_ASIDE[name]
        count(metric)
        logger.warning(message, extra={"ignored_field": name, "integration_id": integration_id})


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
    the message)."""
    check_token(headers, cfg.apsis.optout_token_header, token, query)
    fields = decode_fields(body, content_type=_header(headers, "Content-Type"), query=query)
    event = parse_fields(fields, now=now, max_age=timedelta(hours=cfg.apsis.optout_max_age_hours))
    report_set_aside(event, cfg.integration_id)
    slots = [SlotRef(topic=s.topic, channel=s.channel) for s in slots_for(cfg, event.channel, event.topic)]
    unmapped = None
    if not slots and event.topic is None:
        return Accepted(
            0,
            ignored=f"no consent mapping for any {event.channel} subscription in integration {cfg.integration_id}",
            set_aside=event.ignored,
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
    return Accepted(len(slots), unmapped=unmapped, time_fix=event.time_fix, set_aside=event.ignored)
