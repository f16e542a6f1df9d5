"""A route whose secret was blank (not set yet) answered 503 to the value just put, for the whole cache time:
webhook_auth.SecretNotSet, raised for the blank cached value, escaped secrets.accepted_secret before it read
Secrets Manager again, though the runbook says "a call with the new value passes at once, although the
function's cache still holds the old one". Every call got 503 until EFFICY_SYNC_CACHE_SECONDS (60 s) had passed,
and a sender's few retries gave up."""

from __future__ import annotations

import json

import pytest
from efficy_sync import aws, secrets

from tests.integration.test_ingest_routes import (
    NEWS,
    Routes,
    call,
    optout_event,
    records,
    routes,  # noqa: F401  (the fixture)
    webhook_event,
)
from tests.integration.test_secret_rotation import signed

NEW_SECRET = "webhook-secret-now-set-0123456789abcdef"
NEW_TOKEN = "optout-token-now-set-0123456789abcdef"


@pytest.fixture(autouse=True)
def _a_second_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The value is put more than a second after the last call read the versions (they are read again at most
    once a second per container: secrets.REREAD_SECONDS)."""
    monkeypatch.setattr(secrets, "REREAD_SECONDS", 0.0)


def test_a_webhook_secret_put_over_a_blank_one_passes_at_once(routes: Routes) -> None:
    sm = aws.client("secretsmanager")
    sm.put_secret_value(SecretId="x/w", SecretString=" ")  # blank (Secrets Manager refuses "")
    body = records(1)
    assert call(routes.webhook, webhook_event("acme", body, signed(body, "anything")))[0] == 500  # as documented
    sm.put_secret_value(SecretId="x/w", SecretString=NEW_SECRET)
    body = records(2)
    status, answer = call(routes.webhook, webhook_event("acme", body, signed(body, NEW_SECRET)))
    assert status == 202, (status, answer)
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [2]


def test_an_optout_token_put_over_a_blank_one_passes_at_once(routes: Routes) -> None:
    sm = aws.client("secretsmanager")
    sm.put_secret_value(SecretId="x/o", SecretString=" ")
    body = json.dumps({"event": "email.unsubscribe", "profile_key": "7", "topic_discriminator": NEWS}).encode()
    assert call(routes.optout, optout_event("POST", body=body, headers={"X-Apsis-Webhook-Token": "x"}))[0] == 500
    sm.put_secret_value(SecretId="x/o", SecretString=NEW_TOKEN)
    status, answer = call(routes.optout, optout_event("POST", body=body, headers={"X-Apsis-Webhook-Token": NEW_TOKEN}))
    assert status == 202, (status, answer)
    assert [m["profile_key"] for m in routes.messages(routes.optout_queue)] == [7]
