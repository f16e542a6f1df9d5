"""The opt-out route keeps an opt-out whose optional fields it cannot use (contracts/apsis-one.md §6/§9: the
Webhook node's body is whatever the marketer sets up, and a refused call is never resent): `occurred_at` in the
formats a node plausibly sends is read, any other is replaced by the receive time; an `email` that is not an
address is set aside when the profile key finds the person. Only a call with no way to find the person is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from efficy_sync import optout_intake
from efficy_sync.config import ConfigError, config_from_dict
from efficy_sync.optout_event import OptOutPayloadError, decode_fields, parse_event, parse_fields
from efficy_sync.optout_intake import OptOutMessage, accept

from tests.unit.consent_configs import NEWS, consent_config

CFG = consent_config()
TOKEN = "a-fake-token-for-tests"
HEADERS = {"x-apsis-webhook-token": TOKEN}
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # epoch 1714557600
RECEIVED = "2024-05-01T10:00:00.000Z"
DAY = timedelta(hours=24)  # the integration's default apsis.optout_max_age_hours


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {"event": "email.unsubscribe", "profile_key": "123", "topic_discriminator": NEWS}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


# ---- occurred_at: the forms a Webhook node plausibly sends are read ---------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2024-05-01 09:00:00 UTC", "2024-05-01T09:00:00.000Z"),
        ("2024-05-01T09:00:00 utc", "2024-05-01T09:00:00.000Z"),
        ("2024-05-01 09:00:00 GMT", "2024-05-01T09:00:00.000Z"),
        (1714554000, "2024-05-01T09:00:00.000Z"),  # epoch seconds, a JSON number
        (1714554000.5, "2024-05-01T09:00:00.500Z"),
        ("1714554000", "2024-05-01T09:00:00.000Z"),  # epoch seconds as digits
        (" 1714554000.25 ", "2024-05-01T09:00:00.250Z"),
        (1714554000123, "2024-05-01T09:00:00.123Z"),  # epoch milliseconds, a JSON number
        ("1714554000123", "2024-05-01T09:00:00.123Z"),  # epoch milliseconds as digits
        ("Wed, 01 May 2024 11:00:00 +0200", "2024-05-01T09:00:00.000Z"),  # RFC 2822
        ("Wed, 01 May 2024 09:00:00 GMT", "2024-05-01T09:00:00.000Z"),
        ("1 May 2024 09:00:00 -0000", "2024-05-01T09:00:00.000Z"),  # RFC 2822, zone unknown: UTC
        # a time to the minute stands for the latest moment it can mean (a date alone: bounded by the receipt)
        ("01/05/2024 09:00", "2024-05-01T09:00:59.999Z"),  # day first: 1 May, not 5 January
        ("1/5/2024 09:00:30", "2024-05-01T09:00:30.000Z"),
        ("01.05.2024 09:00:00.250", "2024-05-01T09:00:00.250Z"),
        ("01-05-2024", RECEIVED),
        ("2024-04-30", "2024-04-30T23:59:59.999Z"),
        ("01/05/2024 09:00 UTC", "2024-05-01T09:00:59.999Z"),
        ("2024-05-01T09:00Z", "2024-05-01T09:00:59.999Z"),
    ],
)
def test_a_common_occurred_at_form_is_read(given: Any, expected: str) -> None:
    event = parse_event(body(occurred_at=given), now=lambda: NOW, max_age=DAY)
    assert (event.occurred_at, event.time_fix, event.ignored) == (expected, None, ())


@pytest.mark.parametrize("given", ["2024-05-01T11:00:00+02:00", "2024-05-01T09:00:00Z", "2024-05-01T09:00:00"])
def test_iso_8601_is_still_read(given: str) -> None:
    event = parse_event(body(occurred_at=given), now=lambda: NOW, max_age=DAY)
    assert (event.occurred_at, event.time_fix) == ("2024-05-01T09:00:00.000Z", None)


def test_a_form_or_url_parameter_time_is_read_like_a_json_one() -> None:
    form = decode_fields(
        f"event=email.unsubscribe&profile_key=123&topic_discriminator={NEWS}&occurred_at=1714554000".encode(),
        content_type="application/x-www-form-urlencoded",
    )
    assert parse_fields(form, now=lambda: NOW, max_age=DAY).occurred_at == "2024-05-01T09:00:00.000Z"
    query = {"event": ["email.unsubscribe"], "profile_key": ["123"], "topic_discriminator": [NEWS]}
    fields = decode_fields(b"", query={**query, "occurred_at": ["01/05/2024 09:00", "01/05/2024 09:00"]})
    assert parse_fields(fields, now=lambda: NOW, max_age=DAY).occurred_at == "2024-05-01T09:00:59.999Z"


def test_a_read_time_is_still_bounded_by_the_receipt_and_the_max_age() -> None:
    future = parse_event(body(occurred_at=1893456000), now=lambda: NOW, max_age=DAY)  # 2030, epoch seconds
    assert (future.occurred_at, future.time_fix) == (RECEIVED, "future")
    old = parse_event(body(occurred_at="1000000000000"), now=lambda: NOW, max_age=DAY)  # 2001, epoch ms
    assert (old.occurred_at, old.time_fix) == (RECEIVED, "old")


# ---- occurred_at: anything else is the receive time, never a 400 -------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "yesterday",
        "2024-13-45T00:00:00Z",
        "0001-01-01T00:00:00+14:00",  # overflows in UTC
        "31/02/2024 10:00",  # no such day
        "05/13/2024 10:00",  # month first: not read (13 is no month)
        "1e3",
        "x" * 200,
        12345,  # 1970: no epoch an automation sends
        10**30,
        float("nan"),
        True,
        ["2024-05-01T09:00:00Z"],
        {"at": "2024-05-01T09:00:00Z"},
    ],
)
def test_an_unreadable_occurred_at_is_replaced_by_the_receive_time(given: Any) -> None:
    event = parse_event(body(occurred_at=given), now=lambda: NOW, max_age=DAY)
    assert (event.occurred_at, event.time_fix, event.ignored) == (RECEIVED, "unreadable", ("occurred_at",))
    assert not event.future_occurred_at


def test_a_form_time_given_twice_differently_is_replaced_by_the_receive_time() -> None:
    form = decode_fields(
        f"event=email.unsubscribe&profile_key=123&topic_discriminator={NEWS}"
        "&occurred_at=1714554000&occurred_at=1714550000".encode(),
        content_type="application/x-www-form-urlencoded",
    )
    event = parse_fields(form, now=lambda: NOW, max_age=DAY)
    assert (event.occurred_at, event.time_fix) == (RECEIVED, "unreadable")


@pytest.mark.parametrize("given", [..., None, "", "   "])
def test_an_absent_occurred_at_is_the_receive_time_and_not_reported(given: Any) -> None:
    event = parse_event(body(occurred_at=given), now=lambda: NOW, max_age=DAY)
    assert (event.occurred_at, event.time_fix, event.ignored) == (RECEIVED, None, ())


# ---- email ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "Jane Doe <jane@example.com>",
        '"Doe, Jane" <jane@example.com>',
        "<jane@example.com>",
        "Jane < jane@example.com >",
    ],
)
def test_the_address_is_taken_from_a_named_form(given: str) -> None:
    with_key = parse_event(body(email=given), now=lambda: NOW)
    assert (with_key.email, with_key.ignored) == ("jane@example.com", ())
    alone = parse_event(body(profile_key=..., email=given), now=lambda: NOW)  # the address finds the person
    assert (alone.profile_key, alone.email) == (None, "jane@example.com")


@pytest.mark.parametrize(
    "given",
    ["not-an-address", "jane private", "Jane <nope>", "a@b.c, d@e.f", "a@b.c" + "x" * 300, 123, ["j@x.com"], True],
)
def test_an_unusable_email_is_ignored_when_the_profile_key_finds_the_person(given: Any) -> None:
    event = parse_event(body(email=given), now=lambda: NOW)
    assert (event.profile_key, event.email, event.ignored) == (123, None, ("email",))


def test_a_form_email_given_twice_differently_is_ignored_when_the_key_finds_the_person() -> None:
    form = decode_fields(
        f"event=email.unsubscribe&profile_key=123&topic_discriminator={NEWS}&email=a@x.com&email=b@x.com".encode(),
        content_type="application/x-www-form-urlencoded",
    )
    event = parse_fields(form, now=lambda: NOW)
    assert (event.profile_key, event.email, event.ignored) == (123, None, ("email",))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"profile_key": ..., "email": "not-an-address"}, "email"),
        ({"profile_key": ..., "email": "Jane <nope>"}, "email"),
        ({"profile_key": ..., "email": ["jane@example.com"]}, "email"),
        ({"profile_key": "", "email": "jane private"}, "email"),
        ({"profile_key": ...}, "profile_key"),
        ({"profile_key": None, "email": ""}, "profile_key"),
        ({"profile_key": "abc", "email": "jane@example.com"}, "profile_key"),  # a wrong key is still refused
    ],
)
def test_without_a_usable_identifier_the_call_is_still_refused(fields: dict[str, Any], field: str) -> None:
    sent: list[OptOutMessage] = []
    with pytest.raises(OptOutPayloadError) as caught:
        accept(CFG, HEADERS, body(**fields, occurred_at="yesterday"), TOKEN, sent.append, now=lambda: NOW)
    assert caught.value.field == field and sent == []
    assert not any(str(v) in str(caught.value) for v in fields.values() if v not in (..., None, ""))


# ---- the route queues the opt-out and reports what it set aside, without the value ------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, message: str, *, extra: dict[str, Any]) -> None:
        self.lines.append((message, extra))


def test_the_route_queues_the_opt_out_and_reports_each_field_set_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    log, counted = _Recorder(), []
    monkeypatch.setattr(optout_intake, "logger", log)
    monkeypatch.setattr(optout_intake, "count", lambda name: counted.append(name))
    sent: list[OptOutMessage] = []
    raw = body(email="Jane Private <jane.private@localhost", occurred_at="zq-when-she-clicked")
    result = accept(CFG, HEADERS, raw, TOKEN, sent.append, now=lambda: NOW)
    assert (
        result.accepted == 1 and result.time_fix == "unreadable" and set(result.set_aside) == {"email", "occurred_at"}
    )
    (message,) = sent
    assert (message.profile_key, message.email, message.occurred_at) == (123, None, RECEIVED)
    assert sorted(counted) == ["OptOutEmailIgnored", "OptOutTimeUnreadable"]
    assert sorted(extra["ignored_field"] for _, extra in log.lines) == ["email", "occurred_at"]
    text = json.dumps(log.lines)
    assert "jane" not in text.lower() and "zq" not in text


def test_the_route_reports_nothing_for_usable_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    log, counted = _Recorder(), []
    monkeypatch.setattr(optout_intake, "logger", log)
    monkeypatch.setattr(optout_intake, "count", lambda name: counted.append(name))
    sent: list[OptOutMessage] = []
    raw = body(profile_key=..., email="Jane <jane@example.com>", occurred_at="01/05/2024 09:00")
    result = accept(CFG, HEADERS, raw, TOKEN, sent.append, now=lambda: NOW)
    assert result.accepted == 1 and result.set_aside == () and counted == [] and log.lines == []
    assert (sent[0].email, sent[0].occurred_at) == ("jane@example.com", "2024-05-01T09:00:59.999Z")


def test_two_unsubscribes_on_one_day_given_as_a_date_are_not_one() -> None:
    """Read as midnight, the second unsubscribe of a day (after a CRM user undid the first) had the first's time:
    taken for its duplicate, it was dropped and the person stayed in the CRM profile. A date stands for the
    latest moment it can mean, bounded by the receipt: each is its own time."""
    morning = parse_event(body(occurred_at="2024-05-01"), now=lambda: NOW, max_age=DAY)
    later = NOW.replace(hour=15)
    afternoon = parse_event(body(occurred_at="2024-05-01"), now=lambda: later, max_age=DAY)
    assert morning.occurred_at == RECEIVED and afternoon.occurred_at == "2024-05-01T15:00:00.000Z"
    tomorrow = parse_event(body(occurred_at="2024-05-02"), now=lambda: NOW, max_age=DAY)
    assert (tomorrow.occurred_at, tomorrow.time_fix) == (RECEIVED, "future")  # a later day is still no time yet


# ---- occurred_at without a zone: read in `apsis.optout_time_zone` ----------------------------------------------


def zoned(zone: str) -> Any:
    return CFG.model_copy(update={"apsis": CFG.apsis.model_copy(update={"optout_time_zone": zone})})


@pytest.mark.parametrize(
    ("zone", "given", "expected"),
    [
        ("UTC", "2024-05-01 05:00:00", "2024-05-01T05:00:00.000Z"),  # the default: APSIS One's times are UTC
        ("America/New_York", "2024-05-01 05:00:00", "2024-05-01T09:00:00.000Z"),  # EDT, UTC-4
        ("Europe/Brussels", "01/05/2024 05:00:00", "2024-05-01T03:00:00.000Z"),  # CEST, UTC+2, day-first
        ("America/New_York", "Wed, 01 May 2024 05:00:00 -0000", "2024-05-01T09:00:00.000Z"),  # RFC 2822, zone unknown
        ("unknown", "2024-05-01 05:00:00", RECEIVED),  # the latest it can mean (17:00Z), bounded by the receipt
        ("unknown", "2024-04-30 20:00:00", "2024-05-01T08:00:00.000Z"),  # UTC-12 is the latest reading
        # a time that names its zone is that time, whatever the setting
        ("America/New_York", "2024-05-01T05:00:00Z", "2024-05-01T05:00:00.000Z"),
        ("America/New_York", "2024-05-01 05:00:00 UTC", "2024-05-01T05:00:00.000Z"),
        ("unknown", "2024-05-01T05:00:00+02:00", "2024-05-01T03:00:00.000Z"),
        ("unknown", 1714539600, "2024-05-01T05:00:00.000Z"),  # epoch seconds are UTC
    ],
)
def test_a_time_without_a_zone_is_read_in_the_integrations_zone(zone: str, given: Any, expected: str) -> None:
    sent: list[OptOutMessage] = []
    result = accept(zoned(zone), HEADERS, body(occurred_at=given), TOKEN, sent.append, now=lambda: NOW)
    assert (sent[0].occurred_at, result.time_fix) == (expected, None)


def test_the_hour_that_happens_twice_is_read_as_its_later_meaning() -> None:
    """New York's clocks went back at 06:00Z on 3 Nov 2024: 01:30 happened at 05:30Z and again at 06:30Z. The later
    one, because an opt-out read as older than it was can pass for a duplicate and be dropped."""
    now = datetime(2024, 11, 3, 12, 0, tzinfo=UTC)
    event = parse_fields(
        json.loads(body(occurred_at="2024-11-03 01:30:00")), now=lambda: now, zone=_zone("America/New_York")
    )
    assert event.occurred_at == "2024-11-03T06:30:00.000Z"


def test_an_unknown_zone_calls_a_time_future_only_when_no_reading_of_it_can_be_true() -> None:
    sent: list[OptOutMessage] = []
    cfg = zoned("unknown")
    fixes = [
        accept(cfg, HEADERS, body(occurred_at=given), TOKEN, sent.append, now=lambda: NOW).time_fix
        for given in ("2024-05-01 23:00:00", "2024-05-02 02:00:00")  # at the earliest 09:00Z (UTC+14); 12:00Z
    ]
    assert [m.occurred_at for m in sent] == [RECEIVED, RECEIVED] and fixes == [None, "future"]


def _zone(name: str) -> Any:
    from efficy_sync.optout_time import naive_zone

    return naive_zone(name)


def test_a_runtime_without_the_zone_reads_such_times_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Lambda image without a time zone database: the zone cannot be loaded, so the time is read as the latest it
    can mean (the safe direction: the opt-out can only look newer), not as UTC and not refused."""
    import zoneinfo

    def missing(name: str) -> Any:
        raise zoneinfo.ZoneInfoNotFoundError(name)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", missing)
    sent: list[OptOutMessage] = []
    accept(
        zoned("America/New_York"), HEADERS, body(occurred_at="2024-05-01 05:00:00"), TOKEN, sent.append, now=lambda: NOW
    )
    assert sent[0].occurred_at == RECEIVED


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "EST5EDT; rm", "", 5])
def test_a_zone_that_is_none_is_refused_with_the_setting_named(zone: Any) -> None:
    raw = CFG.model_dump(mode="json")
    raw["apsis"]["optout_time_zone"] = zone
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    [problem] = info.value.problems
    assert problem.path == "apsis.optout_time_zone" and "IANA time zone name" in str(problem)
