"""Rotating a route's secret: Efficy (or APSIS One's Webhook node) and Secrets Manager change one after the
other, and neither caller documents retrying a refused call, so the calls of that gap must not be refused.

Against moto's Secrets Manager, whose version stages (AWSCURRENT, AWSPREVIOUS) and creation dates are real, and
through the shipped handlers (tests.integration.test_ingest_routes loads them as API Gateway would call them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from efficy_sync import aws, secrets
from efficy_sync.settings import settings

from tests.integration.test_ingest_routes import (
    NEWS,
    OPTOUT_TOKEN,
    WEBHOOK_SECRET,
    Routes,
    call,
    optout_event,
    records,
    routes,  # noqa: F401  (the fixture)
    webhook_event,
)

NEW_SECRET = "wh-secret-new-77f0c1d2e3b4a5968778695a4b3c2d1e"
NEW_TOKEN = "optout-token-new-1a2b3c4d5e6f"


def signed(body: bytes, secret: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Efficy-Timestamp": stamp, "X-Efficy-Signature": f"sha256={digest}"}


def rotate(name: str, value: str) -> None:
    aws.client("secretsmanager").put_secret_value(SecretId=name, SecretString=value)


def optout(token: str, key: str = "7") -> dict[str, Any]:
    body = json.dumps({"event": "email.unsubscribe", "profile_key": key, "topic_discriminator": NEWS}).encode()
    return optout_event("POST", body=body, headers={"X-Apsis-Webhook-Token": token})


def secret_reads() -> list[str]:
    """The GetSecretValue calls the functions make, as botocore sends them."""
    seen: list[str] = []
    client = aws.client("secretsmanager")
    client.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue",
        lambda params, **_: seen.append(params.get("VersionStage", "")),
    )
    return seen


def test_webhooks_signed_with_either_side_of_a_rotation_are_queued(routes: Routes) -> None:
    body = records(11)
    assert call(routes.webhook, webhook_event("acme", body, signed(body, WEBHOOK_SECRET)))[0] == 202  # cached
    rotate("x/w", NEW_SECRET)
    # Efficy was told first: the new secret works at once, although the function's cache still holds the old
    status, answer = call(routes.webhook, webhook_event("acme", records(12), signed(records(12), NEW_SECRET)))
    assert (status, answer["accepted"]) == (202, 1), answer
    # Efficy not told yet: the old secret is still accepted during the grace time, with a warning
    status, answer = call(routes.webhook, webhook_event("acme", records(13), signed(records(13), WEBHOOK_SECRET)))
    assert (status, answer["accepted"]) == (202, 1), answer
    assert "previous version" in routes.log.getvalue()
    # a secret that was never either is refused, and nothing of it queued
    status, answer = call(routes.webhook, webhook_event("acme", records(14), signed(records(14), "guess")))
    assert status == 401 and "X-Efficy-Signature" in answer["error"]
    assert sorted(m["person_key"] for m in routes.messages(routes.contact_queue)) == [11, 12, 13]
    assert WEBHOOK_SECRET not in routes.log.getvalue() and NEW_SECRET not in routes.log.getvalue()


def test_after_the_grace_time_the_previous_secret_is_refused(
    routes: Routes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_SECRET_GRACE_SECONDS", "0")
    settings.cache_clear()
    rotate("x/w", NEW_SECRET)
    status, answer = call(routes.webhook, webhook_event("acme", records(21), signed(records(21), WEBHOOK_SECRET)))
    assert status == 401, answer
    status, answer = call(routes.webhook, webhook_event("acme", records(22), signed(records(22), NEW_SECRET)))
    assert status == 202, answer
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [22]


def test_opt_outs_sent_with_either_token_of_a_rotation_are_queued(routes: Routes) -> None:
    assert call(routes.optout, optout(OPTOUT_TOKEN, "1"))[0] == 202
    rotate("x/o", NEW_TOKEN)
    assert call(routes.optout, optout(NEW_TOKEN, "2"))[0] == 202
    assert call(routes.optout, optout(OPTOUT_TOKEN, "3"))[0] == 202  # the automation not updated yet
    status, answer = call(routes.optout, optout("not-a-token", "4"))
    assert status == 401, answer
    assert sorted(m["profile_key"] for m in routes.messages(routes.optout_queue)) == [1, 2, 3]


def test_a_flood_of_wrong_secrets_reads_secrets_manager_a_bounded_number_of_times(
    routes: Routes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each refusal may look for a newer or previous version, but at most once per REREAD_SECONDS per secret
    (made long here, so that the count does not depend on how fast this machine answers 30 calls)."""
    monkeypatch.setattr(secrets, "REREAD_SECONDS", 60.0)
    reads = secret_reads()
    for n in range(30):
        body = records(100 + n)
        assert call(routes.webhook, webhook_event("acme", body, signed(body, f"wrong-{n}")))[0] == 401
    # the cached value once, then one look at the current and previous versions
    assert reads == ["", "", "AWSPREVIOUS"], reads
    assert routes.depth(routes.contact_queue) == 0


def test_a_secret_stored_with_a_trailing_newline_still_matches_what_the_caller_sends(
    routes: Routes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--secret-string file://token.txt` stores the file's final newline, which nobody types into Efficy or the
    APSIS One automation: every call was a 401."""
    monkeypatch.setenv("EFFICY_SYNC_SECRET_GRACE_SECONDS", "0")  # the previous (clean) version must not help
    settings.cache_clear()
    aws.client("secretsmanager").put_secret_value(SecretId="x/w", SecretString=WEBHOOK_SECRET + "\n")
    aws.client("secretsmanager").put_secret_value(SecretId="x/o", SecretString=OPTOUT_TOKEN + "\r\n")
    body = records(31)
    assert call(routes.webhook, webhook_event("acme", body, signed(body, WEBHOOK_SECRET)))[0] == 202
    assert call(routes.optout, optout(OPTOUT_TOKEN, "31"))[0] == 202
    assert call(routes.optout, optout(OPTOUT_TOKEN + "x", "32"))[0] == 401


def test_a_stray_refusal_does_not_keep_out_a_new_secret_for_long(
    routes: Routes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal caches the versions as they were; a caller switching to a value put right after it was refused
    until the re-read limit ran out, and Efficy does not send a refused call again. The limit is short
    (REREAD_SECONDS, 1 s), and the first call after it passes."""
    assert secrets.REREAD_SECONDS <= 1.0
    monkeypatch.setattr(secrets, "REREAD_SECONDS", 0.3)  # the same mechanism, quicker to wait for
    stray = records(40)
    assert call(routes.webhook, webhook_event("acme", stray, signed(stray, "not-the-secret")))[0] == 401
    aws.client("secretsmanager").put_secret_value(SecretId="x/w", SecretString="brand-new-webhook-secret")
    time.sleep(0.35)
    body = records(41)
    assert call(routes.webhook, webhook_event("acme", body, signed(body, "brand-new-webhook-secret")))[0] == 202
