"""Webhook authentication in every mode and payload validation messages (which name fields, never values)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from efficy_sync import webhook_auth as webhook
from efficy_sync.webhook import MAX_KEY, WebhookPayloadError, parse
from efficy_sync.webhook_auth import WebhookAuthError, sign, sign_body, verify

SECRET = "fake-secret"
BODY = b'{"records": []}'
NOW = 1_800_000_000


def _hmac_headers(ts: int = NOW, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {"x-efficy-timestamp": str(ts), "X-EFFICY-SIGNATURE": sign(secret, str(ts), body)}


def test_hmac_accepts_a_good_signature_whatever_the_header_case() -> None:
    verify(_hmac_headers(), BODY, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing X-Efficy-Signature"),
        ({"X-Efficy-Signature": "sha256=00"}, "missing X-Efficy-Timestamp"),
        ({**_hmac_headers(), "x-efficy-timestamp": "soon"}, "not unix seconds"),
        (_hmac_headers(ts=NOW - 301), "stale"),
        (_hmac_headers(ts=NOW + 301), "stale"),
        (_hmac_headers(secret="other"), "wrong"),
        (_hmac_headers(body=b"{}"), "wrong"),
    ],
)
def test_hmac_refusals_name_the_problem(headers: dict[str, str], message: str) -> None:
    with pytest.raises(WebhookAuthError, match=message):
        verify(headers, BODY, SECRET, now=NOW)


def test_header_mode_and_custom_names() -> None:
    verify({"X-Hook-Key": SECRET}, BODY, SECRET, mode="header", secret_header="X-Hook-Key")
    with pytest.raises(WebhookAuthError, match="wrong"):
        verify({"X-Hook-Key": "nope"}, BODY, SECRET, mode="header", secret_header="X-Hook-Key")
    with pytest.raises(WebhookAuthError, match="missing"):
        verify({}, BODY, SECRET, mode="header", secret_header="X-Hook-Key")


def test_tolerance_is_a_setting() -> None:
    verify(_hmac_headers(ts=NOW - 500), BODY, SECRET, now=NOW, tolerance_seconds=600)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"", "empty body"),
        (b"[]", "body"),
        (b'{"records": [{"table": 11000, "operation": "Update", "date": "2026-01-01T00:00:00Z"}]}', "records[0].key"),
        (
            b'{"records": [{"table": 11000, "key": -1, "operation": "Update", "date": "2026-01-01T00:00:00Z"}]}',
            "records[0].key",
        ),
        (b'{"records": [{"table": 11000, "key": 1, "fields": ["x"]}]}', "records[0].fields"),
    ],
)
def test_payload_errors_name_the_field(body: bytes, path: str) -> None:
    with pytest.raises(WebhookPayloadError, match=path.replace("[", r"\[").replace("]", r"\]")):
        parse(body)


def test_extra_fields_are_tolerated() -> None:
    payload = parse(
        b'{"database": "x", "new": 1, "records": [{"table": 11000, "key": 5, "operation": "Delete", "date": "2026-01-01T00:00:00Z", "extra": true}]}'
    )
    assert payload.records[0].key == 5


# ---- url_token and hmac_body (issue 16.1) ----------------------------------------------------------------------


def test_url_token_mode_takes_the_secret_from_the_token_query_parameter() -> None:
    verify({}, BODY, SECRET, mode="url_token", query={"token": SECRET})
    for query, message in (
        (None, "missing token query parameter"),
        ({}, "missing token"),
        ({"token": ""}, "missing token"),
        ({"token": SECRET + "x"}, "wrong token query parameter"),
        ({"secret": SECRET}, "missing token"),
    ):
        with pytest.raises(WebhookAuthError, match=message) as caught:
            verify({"X-Efficy-Webhook-Secret": SECRET}, BODY, SECRET, mode="url_token", query=query)
        assert SECRET not in str(caught.value)


def test_url_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(webhook.hmac, "compare_digest", spy)
    verify({}, BODY, SECRET, mode="url_token", query={"token": SECRET})
    assert compared == [(SECRET.encode(), SECRET.encode())]


def test_an_empty_secret_never_matches_in_any_mode() -> None:
    """With an empty key anyone can compute a valid HMAC: the check must not run; the integration's failure."""
    from efficy_sync.webhook_auth import SecretNotSet

    ts = str(int(time.time()))
    signed = {
        "X-Efficy-Timestamp": ts,
        "X-Efficy-Signature": sign("", ts, BODY),
        "x-justin-signature": sign_body("", BODY),
    }
    for mode in ("url_token", "header", "hmac_body", "hmac"):
        with pytest.raises(SecretNotSet, match="webhook secret"):
            verify({**signed, "X-Efficy-Webhook-Secret": ""}, BODY, "", mode=mode, query={"token": ""})


def test_hmac_body_mode_signs_the_raw_body_like_the_generic_connector() -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign_body(SECRET, BODY) == f"sha256={digest}"
    verify(
        {"x-justin-signature": f"sha256={digest}"},
        BODY,
        SECRET,
        mode="hmac_body",
        signature_header="X-Justin-Signature",
    )
    verify(
        {"X-Justin-Signature": f"SHA256={digest.upper()}"},
        BODY,
        SECRET,
        mode="hmac_body",
        signature_header="X-Justin-Signature",
    )
    verify({"X-Justin-Signature": digest}, BODY, SECRET, mode="hmac_body", signature_header="X-Justin-Signature")
    for headers, message in (
        ({}, "missing X-Justin-Signature"),
        ({"X-Justin-Signature": sign_body("other", BODY)}, "wrong X-Justin-Signature"),
        ({"X-Justin-Signature": sign_body(SECRET, b"{}")}, "wrong"),
    ):
        with pytest.raises(WebhookAuthError, match=message):
            verify(headers, BODY, SECRET, mode="hmac_body", signature_header="X-Justin-Signature")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(WebhookAuthError, match="unknown authentication mode"):
        verify(_hmac_headers(), BODY, SECRET, mode="none", now=NOW)


@pytest.mark.parametrize("timestamp", [" 1800000000", "+1800000000", "1_800_000_000", "1800000000.0", "١٨٠٠٠٠٠٠٠٠"])
def test_hmac_timestamp_is_plain_unix_seconds(timestamp: str) -> None:
    headers = {"X-Efficy-Timestamp": timestamp, "X-Efficy-Signature": sign(SECRET, timestamp, BODY)}
    with pytest.raises(WebhookAuthError, match="not unix seconds"):
        verify(headers, BODY, SECRET, now=NOW)


# ---- what Efficy really sends (issue 11.8) ---------------------------------------------------------------------


def _one(**changes: object) -> bytes:
    record = {"table": 11000, "key": 5, "operation": "Update", "date": "2026-01-01T10:00:00Z", **changes}
    return json.dumps({"records": [record]}).encode()


# "2" and 2.0 are read as 2 (Efficy parses keys as floats): test_webhook_tolerance.py
@pytest.mark.parametrize("key", [True, "2.5", 2.5, "2_0", 10**30, MAX_KEY + 1, 0, None, [2]])
def test_a_key_efficy_would_not_send_is_refused_naming_the_field(key: object) -> None:
    with pytest.raises(WebhookPayloadError, match=r"records\[0\]\.key") as caught:
        parse(_one(key=key))
    if len(str(key)) > 3:
        assert str(key) not in str(caught.value)


def test_the_largest_key_is_accepted() -> None:
    assert parse(_one(key=MAX_KEY)).records[0].key == MAX_KEY


@pytest.mark.parametrize(
    "date",
    [
        "x",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-01",
        "2026-01-01T10:00:00Zjunk",
        "1" * 30,
        20260101,
        "0001-01-01T00:00:00+14:00",  # overflows when converted to UTC: a 400, not a crash
        "9999-12-31T23:59:59-14:00",
    ],
)
def test_a_date_that_is_not_iso_8601_is_read_as_absent(date: object) -> None:
    """The date only feeds de-duplication: refusing the record for it would drop the person's change."""
    (record,) = parse(_one(date=date)).records
    assert (record.key, record.date) == (5, None)


def test_dates_are_normalised_to_utc_instants() -> None:
    assert parse(_one(date="2026-01-01T12:00:00+02:00")).records[0].date == "2026-01-01T10:00:00.000Z"
    assert parse(_one(date="2026-01-01 10:00:00")).records[0].date == "2026-01-01T10:00:00.000Z"
    assert parse(_one(date="2026-01-01T10:00:00.1234567Z")).records[0].date == "2026-01-01T10:00:00.123Z"


def test_a_body_in_windows_1252_or_with_a_byte_order_mark_is_read() -> None:
    """Refused, every change of the call was lost on every retry; the names and keys we read are ASCII."""
    latin = '{"records": [{"table": 11000, "key": 7, "operation": "Update", "fields": {"NAME": "Müller"}}]}'
    assert [r.key for r in parse(latin.encode("cp1252")).records] == [7]
    assert [r.key for r in parse(b"\xef\xbb\xbf" + _one()).records] == [5]


def test_a_single_record_posted_without_the_records_wrapper_is_read() -> None:
    bare = json.dumps({"table": 11000, "key": 601, "operation": "Update", "date": "2026-01-01T10:00:00Z"}).encode()
    assert [r.key for r in parse(bare).records] == [601]
    with pytest.raises(WebhookPayloadError, match="records"):
        parse(json.dumps({"table": 11000}).encode())  # names no record: still refused


def test_the_generic_connectors_bare_lists_are_read_as_contact_records() -> None:
    """Efficy 12.1 (APSIS's generic connector spec): records and consents as bare lists of `record_id` items."""
    items = [
        {"record_id": "601", "operation": "created"},
        {"record_id": 602, "operation": "Updated"},
        {"record_id": 603, "operation": "deleted"},
        {"record_id": 604, "consent_base_id": 12, "has_consented": False},
        {"record_id": 605, "operation": "merged"},
    ]
    records = parse(json.dumps(items).encode()).records
    assert [(r.table, r.key, r.operation) for r in records] == [
        (11000, 601, "Create"),
        (11000, 602, "Update"),
        (11000, 603, "Delete"),
        (11000, 604, "Update"),  # a consent change: the worker reads the person's CRM profiles again
        (11000, 605, "Resync"),
    ]
    assert records[3].fields == {"consent_base_id": 12, "has_consented": False}  # consent changes stay distinct
    assert [r.key for r in parse(json.dumps(items[0]).encode()).records] == [601]  # one item, not in a list
    payload = parse(json.dumps([{"record_id": "12.5", "operation": "updated"}, items[1]]).encode())
    assert [r.key for r in payload.records] == [602] and payload.invalid[0].problems[0].startswith("records[0].key")
    with pytest.raises(WebhookPayloadError):
        parse(json.dumps([{"record_id": None}]).encode())  # names no person: refused
    with pytest.raises(WebhookPayloadError):
        parse(b"[]")
    bare = [{"table": 11000, "key": 606, "operation": "Update"}, {"table": 11000, "key": 607}]
    assert [r.key for r in parse(json.dumps(bare).encode()).records] == [606, 607]  # records without the wrapper


def test_an_unknown_operation_is_a_resync() -> None:
    assert [r.operation for r in parse(_one(operation="jane@example.com")).records] == ["Resync"]
