"""Webhook authentication in both modes and payload validation messages."""

from __future__ import annotations

import pytest
from efficy_sync.webhook import WebhookAuthError, WebhookPayloadError, parse, sign, verify

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
        (b'{"records": [{"table": 11000, "operation": "Update", "date": "x"}]}', "records[0].key"),
        (b'{"records": [{"table": 11000, "key": -1, "operation": "Update", "date": "x"}]}', "records[0].key"),
        (b'{"records": [{"table": 11000, "key": 1, "operation": "Update"}]}', "records[0].date"),
    ],
)
def test_payload_errors_name_the_field(body: bytes, path: str) -> None:
    with pytest.raises(WebhookPayloadError, match=path.replace("[", r"\[").replace("]", r"\]")):
        parse(body)


def test_extra_fields_are_tolerated() -> None:
    payload = parse(
        b'{"database": "x", "new": 1, "records": [{"table": 11000, "key": 5, "operation": "Delete", "date": "d", "extra": true}]}'
    )
    assert payload.records[0].key == 5
