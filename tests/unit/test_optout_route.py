"""The opt-out route's rules: token (constant time), body validation naming the field, mapping, enqueue."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from efficy_sync.optout import (
    OptOutAuthError,
    OptOutMessage,
    OptOutPayloadError,
    accept,
    check_token,
    parse_event,
    slots_for,
)
from efficy_sync.redelivery import retry_delay

from tests.unit.consent_configs import EVENTS, NEWS, SMS, consent_config

CFG = consent_config()
TOKEN = "a-fake-token-for-tests"
HEADERS = {"x-apsis-webhook-token": TOKEN}  # API Gateway may lower-case header names
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def body(**fields: Any) -> bytes:
    base = {"event": "email.unsubscribe", "profile_key": "123", "topic_discriminator": NEWS}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


# ---- token -----------------------------------------------------------------------------------------------------


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    check_token(HEADERS, "X-Apsis-Webhook-Token", TOKEN)
    assert compared == [(TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing X-Apsis-Webhook-Token header"),
        ({"X-Apsis-Webhook-Token": ""}, "missing"),
        ({"X-Apsis-Webhook-Token": TOKEN + "x"}, "wrong X-Apsis-Webhook-Token"),
        ({"X-Apsis-Webhook-Token": TOKEN.upper()}, "wrong"),
        (None, "missing"),
    ],
)
def test_a_missing_or_wrong_token_is_refused(headers: dict[str, str] | None, message: str) -> None:
    with pytest.raises(OptOutAuthError, match=message):
        check_token(headers, "X-Apsis-Webhook-Token", TOKEN)


@pytest.mark.parametrize("secret", ["", "  "])
def test_an_empty_secret_never_matches_and_is_the_integration_s_failure(secret: str) -> None:
    """A 500 the caller retries once it is set (and an error in the log), not a 401 blamed on the caller."""
    from efficy_sync.webhook_auth import SecretNotSet

    with pytest.raises(SecretNotSet, match="opt-out token"):
        check_token({"X-Apsis-Webhook-Token": secret}, "X-Apsis-Webhook-Token", secret)


# ---- body --------------------------------------------------------------------------------------------------


def test_the_simulators_body_is_accepted() -> None:
    raw = json.dumps(
        {
            "event": "email.unsubscribe",
            "profile_key": "1001",
            "email": "person1@example.com",
            "mobile": None,
            "topic_discriminator": NEWS,
            "channel_discriminator": "com.apsis1.channels.email",
            "occurred_at": "2024-05-01T12:00:00.123+02:00",
        }
    ).encode()
    event = parse_event(raw)
    assert (event.event, event.channel, event.topic, event.profile_key) == ("email.unsubscribe", "email", NEWS, 1001)
    assert event.occurred_at == "2024-05-01T10:00:00.123Z"


def test_abuse_needs_no_topic_and_reaches_the_whole_section() -> None:
    event = parse_event(body(event="email.abuse", topic_discriminator=None))
    assert event.whole_section and event.topic is None and event.channel == "email"
    assert event.occurred_at  # defaulted to now


def test_an_sms_opt_out_and_defaults() -> None:
    event = parse_event(body(event="sms.unsubscribe", topic_discriminator=SMS, occurred_at=...), now=lambda: NOW)
    assert event.channel == "sms" and event.occurred_at == "2024-05-01T10:00:00.000Z"
    assert parse_event(body(occurred_at="2024-05-01T10:00:00")).occurred_at == "2024-05-01T10:00:00.000Z"
    assert parse_event(body(profile_key=1001)).profile_key == 1001  # a JSON whole number is the same key
    assert parse_event(body(channel_discriminator="email")).channel == "email"


def test_without_a_profile_key_the_email_finds_the_person() -> None:
    event = parse_event(body(profile_key="", email="jo@example.com"))
    assert event.profile_key is None and event.email == "jo@example.com"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", "body"),
        (b"{nope", "body"),
        (b"[]", "body"),
        (b'"text"', "body"),
        (body(event=...), "event"),
        (body(event="email.bounce"), "event"),
        (body(event=3), "event"),
        (body(topic_discriminator=...), "topic_discriminator"),
        (body(topic_discriminator=""), "topic_discriminator"),
        (body(topic_discriminator="has spaces"), "topic_discriminator"),
        (body(topic_discriminator=["a"]), "topic_discriminator"),
        (body(profile_key="abc"), "profile_key"),
        (body(profile_key="0"), "profile_key"),
        (body(profile_key="-4"), "profile_key"),
        (body(profile_key="1.5"), "profile_key"),
        (body(profile_key=True), "profile_key"),
        (body(profile_key=1001.0), "profile_key"),
        (body(profile_key="9007199254740993"), "profile_key"),  # float() made it ...992: another person
        (body(profile_key=9007199254740993), "profile_key"),
        (body(profile_key="1e3"), "profile_key"),
        (body(profile_key="0123"), "profile_key"),
        (body(profile_key="١٢٣"), "profile_key"),
        (body(profile_key=" 12 3"), "profile_key"),
        (body(profile_key=..., email="a@b.c" + "x" * 300), "email"),  # the only identifier: refused
        (b'{"event": "email.unsubscribe", "x": "\xff"}', "body"),
        (body(profile_key=...), "profile_key"),
        (body(profile_key=..., email="not-an-address"), "email"),
        (body(channel_discriminator="com.apsis1.channels.sms"), "channel_discriminator"),
        (
            body(event="sms.unsubscribe", topic_discriminator=SMS, channel_discriminator="email"),
            "channel_discriminator",
        ),
        # an unreadable occurred_at, or an unusable e-mail beside a usable profile_key, is set aside, not refused
        # (the Webhook node does not resend a refused call): test_optout_event_lenient.py
        (b'{"event": "email.unsubscribe", "x": "' + b"a" * 70_000 + b'"}', "body"),
    ],
)
def test_a_malformed_body_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(OptOutPayloadError) as caught:
        parse_event(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


# ---- mapping and enqueue ---------------------------------------------------------------------------------------


def test_slots_follow_the_consent_mappings() -> None:
    assert [(s.topic, s.crm_profile) for s in slots_for(CFG, "email", NEWS)] == [(NEWS, 12)]
    assert [(s.topic, s.crm_profile) for s in slots_for(CFG, "email", None)] == [(NEWS, 12), (EVENTS, 14)]
    assert [(s.key, s.crm_profile) for s in slots_for(CFG, "sms", SMS)] == [(f"{SMS}|sms", 13)]
    assert slots_for(CFG, "sms", NEWS) == []
    assert slots_for(CFG, "email", "usercreated.topics.unmapped") == []


def test_accept_queues_one_message_per_event_and_counts_its_subscriptions() -> None:
    sent: list[OptOutMessage] = []
    result = accept(CFG, HEADERS, body(event="email.abuse", topic_discriminator=None), TOKEN, sent.append)
    assert result.accepted == 2 and result.ignored is None
    (message,) = sent
    assert message.integration_id == "acme" and message.profile_key == 123 and message.email is None
    assert [(s.topic, s.channel) for s in message.slots] == [(NEWS, "email"), (EVENTS, "email")]


def test_the_address_travels_beside_the_profile_key_for_the_write_back_to_check_it() -> None:
    """The write-back removes the key's person only if Efficy has the same address (test_optout_identity)."""
    sent: list[OptOutMessage] = []
    accept(CFG, HEADERS, body(email="jo@example.com"), TOKEN, sent.append)
    accept(CFG, HEADERS, body(profile_key=None, email="jo@example.com"), TOKEN, sent.append)
    accept(CFG, HEADERS, body(), TOKEN, sent.append)
    assert [m.email for m in sent] == ["jo@example.com", "jo@example.com", None]


def test_an_unmapped_subscription_is_queued_to_be_recorded_only() -> None:
    """Kept, so a mapping added later does not opt the person in again; nothing to write back to Efficy."""
    sent: list[OptOutMessage] = []
    result = accept(CFG, HEADERS, body(topic_discriminator="usercreated.topics.other"), TOKEN, sent.append)
    assert result.accepted == 1 and result.ignored is None and "recorded, not written back" in (result.unmapped or "")
    assert [(s.topic, s.channel) for s in sent[0].slots] == [("usercreated.topics.other", "email")]


def test_an_abuse_report_on_a_channel_with_no_mapping_is_acknowledged_without_queueing() -> None:
    sms_only = CFG.model_copy(update={"consent_mappings": [m for m in CFG.consent_mappings if m.channel == "sms"]})
    sent: list[OptOutMessage] = []
    result = accept(sms_only, HEADERS, body(event="email.abuse", topic_discriminator=None), TOKEN, sent.append)
    assert result.accepted == 0 and "no consent mapping" in (result.ignored or "") and sent == []


@pytest.mark.parametrize(("headers", "raw"), [({}, body()), (HEADERS, b"{nope")])
def test_nothing_is_queued_for_a_refused_request(headers: dict[str, str], raw: bytes) -> None:
    sent: list[OptOutMessage] = []
    with pytest.raises((OptOutAuthError, OptOutPayloadError)):
        accept(CFG, headers, raw, TOKEN, sent.append)
    assert sent == []


def test_the_token_is_checked_before_the_body_is_read() -> None:
    with pytest.raises(OptOutAuthError):
        accept(CFG, {"X-Apsis-Webhook-Token": "wrong"}, b"{nope", TOKEN, lambda m: None)


def test_a_queue_failure_propagates() -> None:
    def broken(message: OptOutMessage) -> None:
        raise RuntimeError("SQS is down")

    with pytest.raises(RuntimeError):
        accept(CFG, HEADERS, body(), TOKEN, broken)


def test_retries_back_off_up_to_six_hours() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(20) == 6 * 3600
    assert sum(retry_delay(n) for n in range(1, 10)) > 3 * 3600  # about four hours before the DLQ


# ---- a time later than the receipt (issue 11.2) -----------------------------------------------------------------


def test_an_occurred_at_in_the_future_is_replaced_by_the_receive_time() -> None:
    event = parse_event(body(occurred_at="2999-01-01T00:00:00Z"), now=lambda: NOW)
    assert event.occurred_at == "2024-05-01T10:00:00.000Z" and event.future_occurred_at
    # a few seconds ahead (clocks differ): bounded too, but not reported as wrong
    event = parse_event(body(occurred_at="2024-05-01T10:00:30Z"), now=lambda: NOW)
    assert event.occurred_at == "2024-05-01T10:00:00.000Z" and not event.future_occurred_at
    event = parse_event(body(occurred_at="2024-05-01T09:59:00Z"), now=lambda: NOW)
    assert event.occurred_at == "2024-05-01T09:59:00.000Z" and not event.future_occurred_at


def test_an_occurred_at_older_than_the_max_age_is_replaced_by_the_receive_time() -> None:
    day = timedelta(hours=24)
    event = parse_event(body(occurred_at="2001-01-01T00:00:00Z"), now=lambda: NOW, max_age=day)
    assert event.occurred_at == "2024-05-01T10:00:00.000Z" and event.time_fix == "old"
    assert not event.future_occurred_at
    event = parse_event(body(occurred_at="2024-04-30T10:00:01Z"), now=lambda: NOW, max_age=day)  # within a day
    assert event.occurred_at == "2024-04-30T10:00:01.000Z" and event.time_fix is None
    event = parse_event(body(occurred_at="2024-04-30T09:59:59Z"), now=lambda: NOW, max_age=day)
    assert event.occurred_at == "2024-05-01T10:00:00.000Z" and event.time_fix == "old"
    # without a bound (the low-level parser's default) an old time is kept
    assert parse_event(body(occurred_at="2001-01-01T00:00:00Z"), now=lambda: NOW).time_fix is None


def test_the_route_bounds_occurred_at_by_the_integrations_max_age() -> None:
    sent: list[OptOutMessage] = []
    old = body(occurred_at="2024-04-29T10:00:00Z")
    result = accept(CFG, HEADERS, old, TOKEN, sent.append, now=lambda: NOW)
    assert result.time_fix == "old" and sent[-1].occurred_at == "2024-05-01T10:00:00.000Z"
    week = CFG.model_copy(update={"apsis": CFG.apsis.model_copy(update={"optout_max_age_hours": 24 * 7})})
    result = accept(week, HEADERS, old, TOKEN, sent.append, now=lambda: NOW)
    assert result.time_fix is None and sent[-1].occurred_at == "2024-04-29T10:00:00.000Z"


def test_a_future_opt_out_cannot_make_a_later_genuine_one_look_older() -> None:
    """The queued time of a call dated in the future is the receive time, so a genuine opt-out received later
    carries a later time and is not taken for a duplicate of it."""
    sent: list[OptOutMessage] = []
    accept(CFG, HEADERS, body(occurred_at="2999-01-01T00:00:00Z"), TOKEN, sent.append, now=lambda: NOW)
    later = datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
    accept(CFG, HEADERS, body(occurred_at="2024-05-02T09:00:00Z"), TOKEN, sent.append, now=lambda: later)
    assert [m.occurred_at for m in sent] == ["2024-05-01T10:00:00.000Z", "2024-05-02T09:00:00.000Z"]
    assert sent[0].occurred_at < sent[1].occurred_at


# ---- no value in an error text (issue 11.8) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"event": "jane.private@localhost"}, "jane.private"),
        ({"channel_discriminator": "bob@[10.0.0.1]"}, "bob@"),
        ({"topic_discriminator": "+32 470 12 34 56"}, "470"),
        ({"profile_key": "9007199254740993"}, "9007199254740993"),
        ({"email": "jane private", "profile_key": ...}, "jane private"),
    ],
)
def test_an_error_names_the_field_never_the_value(fields: dict[str, Any], value: str) -> None:
    with pytest.raises(OptOutPayloadError) as caught:
        parse_event(body(**fields))
    assert caught.value.field == next(iter(fields)) and value not in str(caught.value)


# ---- form, GET parameters and the token in the URL (issue 16.2) -------------------------------------------------


def test_a_form_body_and_url_parameters_carry_the_same_fields() -> None:
    sent: list[OptOutMessage] = []
    form = b"event=email.unsubscribe&profile_key=123&topic_discriminator=" + NEWS.encode() + b"&extra=ignored"
    accept(
        CFG, {**HEADERS, "content-type": "application/x-www-form-urlencoded; charset=utf-8"}, form, TOKEN, sent.append
    )
    query = {"event": "email.unsubscribe", "profile_key": "123", "topic_discriminator": NEWS, "token": TOKEN}
    accept(CFG, {}, b"", TOKEN, sent.append, query=query)
    accept(CFG, {}, b"", TOKEN, sent.append, query={k: [v] for k, v in query.items()})
    assert [(m.profile_key, m.event, [s.topic for s in m.slots]) for m in sent] == [
        (123, "email.unsubscribe", [NEWS])
    ] * 3


def test_the_token_as_url_parameter_is_checked_like_the_header() -> None:
    check_token({}, "X-Apsis-Webhook-Token", TOKEN, {"token": TOKEN})
    for query in ({"token": "wrong"}, {"token": ""}, {}, {"token": [TOKEN, "other"]}):
        with pytest.raises(OptOutAuthError, match="token") as caught:
            check_token({}, "X-Apsis-Webhook-Token", TOKEN, query)
        assert TOKEN not in str(caught.value)
    with pytest.raises(OptOutAuthError, match="wrong X-Apsis-Webhook-Token"):  # the header wins when both come
        check_token({"X-Apsis-Webhook-Token": "wrong"}, "X-Apsis-Webhook-Token", TOKEN, {"token": TOKEN})


def test_a_malformed_form_or_repeated_field_names_the_field() -> None:
    form_headers = {**HEADERS, "Content-Type": "application/x-www-form-urlencoded"}
    with pytest.raises(OptOutPayloadError) as caught:
        accept(CFG, form_headers, b"event=email.unsubscribe&event=sms.unsubscribe", TOKEN, lambda m: None)
    assert caught.value.field == "event"
    with pytest.raises(OptOutPayloadError) as caught:
        accept(CFG, HEADERS, b"", TOKEN, lambda m: None)
    assert caught.value.field == "body"


def test_the_first_wrong_field_is_named_in_the_documented_order() -> None:
    """The body model checks event, channel, topic, key, e-mail, time in that order, as the route always did."""
    from efficy_sync.optout_event import decode_fields, parse_fields

    form = decode_fields(
        b"event=email.nope&profile_key=1&profile_key=2", content_type="application/x-www-form-urlencoded"
    )
    with pytest.raises(OptOutPayloadError) as caught:
        parse_fields(form)
    assert caught.value.field == "event"
    with pytest.raises(OptOutPayloadError) as caught:
        parse_fields({"event": "email.unsubscribe", "topic_discriminator": "news", "profile_key": "x", "email": "y"})
    assert caught.value.field == "profile_key"


def test_event_and_channel_names_are_read_whatever_their_case() -> None:
    """A Webhook node's fields are typed by hand: "Email.Unsubscribe" names the event as surely, and a 400 is
    an opt-out nobody sends again."""
    sent: list[OptOutMessage] = []
    accept(
        CFG,
        HEADERS,
        body(event=" Email.Unsubscribe", channel_discriminator="com.apsis1.channels.Email"),
        TOKEN,
        sent.append,
    )
    accept(CFG, HEADERS, body(event="EMAIL.UNSUBSCRIBE", channel_discriminator="EMAIL"), TOKEN, sent.append)
    assert [(m.event, [s.channel for s in m.slots]) for m in sent] == [("email.unsubscribe", ["email"])] * 2
