"""The APSIS One opt-out route's side: the static token, checked in constant time, and the fields a
Marketing Automation Webhook node sends (JSON, form or GET parameters), validated into an `OptOutEvent`.

Split from `optout` (which accepts the event onto the queue and writes it back to Efficy); `optout` re-exports
these names, so `from efficy_sync.optout import parse_event` keeps working.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from .optout_profile import add_crm_id, crm_id, flatten, foreign_key
from .optout_time import TimeFix, occurred_at
from .webhook import MAX_KEY
from .webhook_auth import require_secret_set

Channel = Literal["email", "sms"]

#: event -> (channel, whole section?)
EVENTS: dict[str, tuple[Channel, bool]] = {
    "email.unsubscribe": ("email", False),
    "email.abuse": ("email", True),
    "sms.unsubscribe": ("sms", False),
}
CHANNELS: dict[str, Channel] = {
    "email": "email",
    "sms": "sms",
    "com.apsis1.channels.email": "email",
    "com.apsis1.channels.sms": "sms",
}
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_BODY_BYTES = 64 * 1024


class OptOutAuthError(Exception):
    """Missing or wrong token: answered 401, nothing enqueued."""


class OptOutPayloadError(Exception):
    """Malformed body: answered 400 naming the field, nothing enqueued."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


# ---- the route ------------------------------------------------------------------------------------------------
#
# APSIS One's Webhook node sends whatever the user sets up (contracts/apsis-one.md §9): a JSON body, a form, or
# the data as URL parameters of a GET. All three carry the same fields, with the token as a header or as the
# `token` URL parameter. Values are refused, never guessed: the profile key is our crm-id (the K_CONTACT as
# decimal text), and an error text names the field, never its value (the caller's values may be personal).
# Except the optional ones: the node does not resend a refused call, so an unusable `occurred_at` (a format we
# cannot read) or `email` (when the profile key finds the person) is set aside, named in `ignored`, and the
# opt-out is kept; only a call that leaves no way to find the person is refused.

#: The route's fields; anything else in a form or query is ignored (the Webhook node may add its own).
FIELDS = (
    "event",
    "profile_key",
    "email",
    "mobile",
    "topic_discriminator",
    "channel_discriminator",
    "occurred_at",
    "keyspace_discriminator",  # whose key profile_key is (optout_profile.foreign_key)
)
TOKEN_PARAMETER = "token"
_PROFILE_KEY = re.compile(r"^[1-9][0-9]{0,15}$")
# `mobile` is not read (kept for reference by the automation's body): an odd value never costs an opt-out.
_MAX_TEXT = {"email": 254, "topic_discriminator": 200, "channel_discriminator": 64, "occurred_at": 64}
#: "Jane Doe <jane@example.com>": the address between the angle brackets
_NAMED_ADDRESS = re.compile(r"^[^<>]*<\s*([^<>\s]+)\s*>$")


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    lowered = name.lower()
    for key, value in (headers or {}).items():
        if key.lower() == lowered:
            return value
    return None


class _Repeated(tuple[Any, ...]):
    """Every value of a form or URL parameter (JSON lists stay lists, and are refused as not text)."""


def _repeated(value: Any) -> Any:
    return _Repeated(value) if isinstance(value, list | tuple) else value


def _one(values: Mapping[str, Any], name: str) -> Any:
    """A form or query field given once; one given several times with different values is refused."""
    value = values.get(name)
    if isinstance(value, _Repeated):
        distinct = list(dict.fromkeys(value))
        if len(distinct) > 1:
            raise OptOutPayloadError(name, "is given more than once")
        return distinct[0] if distinct else None
    return value


def check_token(
    headers: Mapping[str, str] | None,
    header_name: str,
    expected: str,
    query: Mapping[str, Any] | None = None,
) -> None:
    """The static token the automation's Webhook node sends, as the header or the `token` URL parameter;
    compared in constant time. The header wins when both are given."""
    require_secret_set(expected, "opt-out token")
    given = _header(headers, header_name)
    where = header_name
    if not given and query:
        try:
            given = _one({TOKEN_PARAMETER: _repeated(query.get(TOKEN_PARAMETER))}, TOKEN_PARAMETER)
        except OptOutPayloadError:
            raise OptOutAuthError(f"{TOKEN_PARAMETER} query parameter given more than once") from None
        where = f"{TOKEN_PARAMETER} query parameter"
    if not given or not isinstance(given, str):
        raise OptOutAuthError(f"missing {header_name} header or {TOKEN_PARAMETER} query parameter")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise OptOutAuthError(f"wrong {where}")


@dataclass(frozen=True)
class OptOutEvent:
    """The automation's webhook body, validated."""

    event: str
    channel: Channel
    topic: str | None  # None for email.abuse: every e-mail subscription of the section
    profile_key: int | None
    email: str | None
    occurred_at: str  # ISO 8601, UTC, never later than the time we received it
    # the caller's occurred_at was in the future ("future"), too old ("old") or not a time ("unreadable"): replaced
    time_fix: TimeFix = None
    ignored: tuple[str, ...] = ()  # optional fields given but unusable, set aside (names only, never values)

    @property
    def future_occurred_at(self) -> bool:
        return self.time_fix == "future"

    @property
    def whole_section(self) -> bool:
        return EVENTS[self.event][1]


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = _one(body, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise OptOutPayloadError(name, "must be a string")
    text = str(value).strip()
    if not text.isascii() and not _encodes(text):
        # valid JSON ("\\ud800") that no UTF-8 can carry: the queued message could never be written, and a
        # 503 for it would be sent again forever (and cost the events after it in an array)
        raise OptOutPayloadError(name, "is not text (it holds a lone UTF-16 surrogate)")
    if len(text) > _MAX_TEXT.get(name, 200):
        raise OptOutPayloadError(name, f"is longer than {_MAX_TEXT.get(name, 200)} characters")
    return text or None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _profile_key(body: Mapping[str, Any]) -> int | None:
    """Our crm-id: the K_CONTACT as decimal text (or a JSON whole number). Never through float: a key above
    2**53 would silently become another person's."""
    value = _one(body, "profile_key")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    problem = f"must be the Efficy K_CONTACT: a whole number from 1 to {MAX_KEY} (the crm-id keyspace's key)"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise OptOutPayloadError("profile_key", problem)
    text = str(value).strip()
    if not _PROFILE_KEY.match(text) or int(text) > MAX_KEY:
        raise OptOutPayloadError("profile_key", problem)
    return int(text)


def _occurred_at(
    value: Any, now: datetime, max_age: timedelta | None = None, zone: tzinfo | None = UTC
) -> tuple[str, TimeFix]:
    """optout_time.occurred_at, for a field a form may give more than once: the same time repeated is that time,
    different times are none we can read (a plain tuple)."""
    if isinstance(value, _Repeated):
        value = value[0] if len(set(value)) == 1 else tuple(value)
    return occurred_at(value, now, max_age, zone)


def _address(value: Any) -> tuple[str | None, str | None]:
    """(the address, None), (None, why it is unusable), or (None, None) when none is given. "Name <address>"
    gives the address between the angle brackets."""
    try:
        text = _text({"email": value}, "email")
    except OptOutPayloadError as error:
        return None, error.problem
    if text is None:
        return None, None
    named = _NAMED_ADDRESS.match(text)
    address = named.group(1) if named else text
    return (address, None) if _EMAIL.match(address) else (None, "is not an e-mail address")


#: events in one call (a JSON array): a bound of its own beside the 64 KB body (which allows some 750 short ones)
MAX_EVENTS = 1000


def _form(text: str) -> dict[str, Any] | None:
    """A form-encoded body's fields (every value of a repeated one); None when `text` is not a form."""
    # empty pieces ("a=1&", "a=1&&b=2") are skipped, as the form standard says: a node's template with a
    # trailing "&" sends a valid form, and a refusal loses the opt-out (the node does not send it again)
    pieces = [piece for piece in text.strip().split("&") if piece]
    if not pieces:
        return None
    try:
        pairs = parse_qsl("&".join(pieces), keep_blank_values=True, strict_parsing=True, max_num_fields=50)
    except ValueError:
        return None
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return {name: _Repeated(values) for name, values in form.items()}


def decode_events(
    raw: bytes | str,
    *,
    content_type: str | None = None,
    query: Mapping[str, Any] | None = None,
) -> list[Mapping[str, Any]]:
    """The fields of each event of a call: a JSON object, a JSON array of objects (a Webhook node set up to send
    several), a form-encoded body, or (no body) the URL parameters.

    What the node sends is whatever its owner set up (contracts/apsis-one.md §9, not documented further), and it
    does not resend a refused call, so a refusal loses a legal opt-out: a form is read as a form whatever the
    Content-Type says (none, or text/plain) when the body is not JSON, and a UTF-8 byte-order mark is dropped."""
    if len(raw) > MAX_BODY_BYTES:
        raise OptOutPayloadError("body", f"larger than {MAX_BODY_BYTES} bytes")
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OptOutPayloadError("body", "is not text (UTF-8)") from None
    if not text.strip():
        if query and any(name in query for name in FIELDS):
            return [{name: _repeated(query[name]) for name in FIELDS if name in query}]
        raise OptOutPayloadError("body", "is empty: send the fields as JSON, as a form or as URL parameters")
    media = (content_type or "").split(";")[0].strip().lower()
    form_media = media == "application/x-www-form-urlencoded"
    body: Any = None
    if text.lstrip().startswith(("{", "[")):  # JSON, whatever the Content-Type says (a form never starts so)
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):  # nested deeper than the parser goes: bad input, not a 503
            if not form_media:
                raise OptOutPayloadError("body", "is not valid JSON") from None
    if body is None:
        form = _form(text)
        if form is None:
            if form_media:
                raise OptOutPayloadError("body", "is not a valid form (application/x-www-form-urlencoded)")
            raise OptOutPayloadError("body", "is neither JSON nor a form (application/x-www-form-urlencoded)")
        return [form]
    events = body if isinstance(body, list) else [body]
    if not events:
        raise OptOutPayloadError("body", "is an empty list: no opt-out in it")
    if len(events) > MAX_EVENTS:
        raise OptOutPayloadError("body", f"holds more than {MAX_EVENTS} events")
    for number, event in enumerate(events):
        if not isinstance(event, dict):
            where = f"[{number}]" if isinstance(body, list) else "body"
            raise OptOutPayloadError(where, "must be a JSON object")
    return events


def decode_fields(
    raw: bytes | str,
    *,
    content_type: str | None = None,
    query: Mapping[str, Any] | None = None,
) -> Mapping[str, Any]:
    """The fields of a call of one event (decode_events, refusing a list of several)."""
    events = decode_events(raw, content_type=content_type, query=query)
    if len(events) > 1:
        raise OptOutPayloadError("body", "must be a JSON object")
    return events[0]


class OptOutBody(BaseModel):
    """The fields of the automation's call, as the route receives them (JSON, form or URL parameters), checked in
    this order; the first wrong one is refused with OptOutPayloadError naming it (validators raise it directly, so
    a caller sees the field and the problem, never the value). `context={"now": datetime, "max_age": timedelta}`
    bounds occurred_at. email and occurred_at are optional: unusable, they are set aside (named in `ignored`), not
    refused, unless no way to find the person remains."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    event: str = ""
    channel_discriminator: str | None = None
    topic_discriminator: str | None = None
    profile_key: int | None = None
    email: Any = None  # as given; the address (str) or None once validated (`_optional`)
    occurred_at: Any = None  # as given; the ISO 8601 UTC text once validated (`_optional`)
    #: occurred_at was beyond our clock + optout_time.FUTURE_SKEW_SECONDS, older than the context's max_age, or unreadable,
    #: and replaced by the receive time
    time_fix: TimeFix = None
    ignored: tuple[str, ...] = ()  # the optional fields given but unusable, set aside

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, data: Any, info: ValidationInfo) -> Any:
        """Only the route's fields (the Webhook node may add its own), a nested `profile` read as them and a key
        of another keyspace set aside (optout_profile); each validator reads its own field (`_text`,
        `_profile_key`: a form's field repeated with different values is refused in field order)."""
        if not isinstance(data, Mapping):
            raise OptOutPayloadError("body", "must be a JSON object")
        flat, twice = flatten(data, skip=("crm_id",))
        if twice is not None:
            raise OptOutPayloadError(twice, "is given twice (and in profile) with different values")
        fields = {name: flat[name] for name in FIELDS if name in flat}
        if "keyspace_discriminator" in fields:  # a form's field: given once
            fields["keyspace_discriminator"] = _one(fields, "keyspace_discriminator")
        ours = (info.context or {}).get("keyspace")
        foreign = foreign_key(fields, ours)
        # the CRM id is no keyspace's key: set aside with one, it was read as an address or the address alone
        # found the person (every contact holding it opted out)
        if not add_crm_id(fields, crm_id(data, ours)):
            raise OptOutPayloadError("profile_key", "is given twice (and in profile) with different values")
        return {**fields, "ignored": ("profile_key",)} if foreign and "profile_key" not in fields else fields

    @field_validator("event", mode="before")
    @classmethod
    def _event(cls, value: Any) -> str:
        event = _text({"event": value}, "event")
        event = event.strip().lower() if isinstance(event, str) else event  # "Email.Unsubscribe" names it too
        if event not in EVENTS:
            raise OptOutPayloadError("event", f"must be one of {', '.join(EVENTS)}")
        return event

    @field_validator("channel_discriminator", mode="before")
    @classmethod
    def _channel(cls, value: Any, info: ValidationInfo) -> str | None:
        given = _text({"channel_discriminator": value}, "channel_discriminator")
        given = given.strip().lower() if isinstance(given, str) else given  # "com.apsis1.channels.Email" too
        channel = EVENTS[info.data["event"]][0]
        if given is not None and CHANNELS.get(given) != channel:
            raise OptOutPayloadError(
                "channel_discriminator", f"must be com.apsis1.channels.{channel} for {info.data['event']}"
            )
        return given

    @field_validator("topic_discriminator", mode="before")
    @classmethod
    def _topic(cls, value: Any, info: ValidationInfo) -> str | None:
        topic = _text({"topic_discriminator": value}, "topic_discriminator")
        if topic is not None and not _TOPIC.match(topic):
            raise OptOutPayloadError("topic_discriminator", "is not an APSIS One topic discriminator")
        if topic is None and not EVENTS[info.data["event"]][1]:
            raise OptOutPayloadError("topic_discriminator", f"is required for {info.data['event']}")
        return topic

    @field_validator("profile_key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> int | None:
        return _profile_key({"profile_key": value})

    @model_validator(mode="after")
    def _optional(self, info: ValidationInfo) -> OptOutBody:
        """email, then occurred_at (after the key, as the route always checked them). An unusable email is
        refused only when no profile_key finds the person; the time in UTC is bounded by when we received it and
        by the context's max_age, and replaced by it when unreadable (`_occurred_at` says why)."""
        self.email, problem = _address(self.email)
        if problem is not None:
            if self.profile_key is None:
                raise OptOutPayloadError("email", problem)
            self.ignored += ("email",)
        if self.profile_key is None and self.email is None:
            foreign = " (the one given is of another keyspace)" if "profile_key" in self.ignored else ""
            raise OptOutPayloadError(
                "profile_key", f"profile_key (the K_CONTACT) or email is required to find the person{foreign}"
            )
        context = info.context or {}
        now = context.get("now") or datetime.now(UTC)
        self.occurred_at, self.time_fix = _occurred_at(
            self.occurred_at, now.astimezone(UTC), context.get("max_age"), context.get("zone", UTC)
        )
        if self.time_fix == "unreadable":
            self.ignored += ("occurred_at",)
        return self

    def to_event(self) -> OptOutEvent:
        channel, whole_section = EVENTS[self.event]
        return OptOutEvent(
            event=self.event,
            channel=channel,
            topic=None if whole_section else self.topic_discriminator,
            profile_key=self.profile_key,
            email=self.email,
            occurred_at=str(self.occurred_at or ""),
            time_fix=self.time_fix,
            ignored=self.ignored,
        )


def parse_fields(
    body: Mapping[str, Any],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    max_age: timedelta | None = None,
    zone: tzinfo | None = UTC,
    keyspace: str | None = None,
) -> OptOutEvent:
    """Raises OptOutPayloadError naming the first field that is wrong. `max_age`: the oldest occurred_at believed
    (the route passes the integration's `apsis.optout_max_age_hours`; None: no lower bound); `zone`: the one a
    time without a zone is read in (`apsis.optout_time_zone`, optout_time.naive_zone); `keyspace`: the one
    profile_key belongs to (`apsis.keyspace`: a key the call says is of another is set aside)."""
    context = {"now": now(), "max_age": max_age, "zone": zone, "keyspace": keyspace}
    return OptOutBody.model_validate(body, context=context).to_event()


def parse_event(
    raw: bytes | str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    max_age: timedelta | None = None,
) -> OptOutEvent:
    """A JSON body (the original form of the route); raises OptOutPayloadError naming the first wrong field."""
    return parse_fields(decode_fields(raw, content_type="application/json"), now=now, max_age=max_age)
