"""A JSON body may carry a lone UTF-16 surrogate as an escape ("\\ud800"): valid JSON, decoded by json.loads into
a str that cannot be encoded as UTF-8. It passed the route's checks, and the queued message could never be
written: the route answered 503 "send again" (counted as an SQS failure) to a call no resend can fix, and in a
JSON array the one bad event cost the events after it. A field that is not text is a field error of its own
event: an unusable `email` beside a profile key is ignored (the key finds the person), as any unusable one."""

from __future__ import annotations

import json

from tests.integration.test_ingest_routes import (  # noqa: F401  (routes is the fixture)
    OPTOUT_TOKEN,
    Routes,
    call,
    optout_event,
    routes,
)
from tests.unit.consent_configs import NEWS

JSON = {"X-Apsis-Webhook-Token": OPTOUT_TOKEN, "Content-Type": "application/json"}
SURROGATE = "jo\ud800@example.com"


def one(key: str, email: str) -> str:
    """One event as JSON text; json.dumps writes a lone surrogate as its escape, as a sender would."""
    return json.dumps({"event": "email.unsubscribe", "profile_key": key, "topic_discriminator": NEWS, "email": email})


def test_a_lone_surrogate_in_the_email_is_no_5xx(routes: Routes) -> None:
    assert "\\ud800" in one("1001", SURROGATE)
    status, answer = call(routes.optout, optout_event("POST", body=one("1001", SURROGATE).encode(), headers=JSON))
    assert status == 202, answer
    (message,) = routes.messages(routes.optout_queue)
    assert message["profile_key"] == 1001


def test_a_lone_surrogate_in_one_event_of_an_array_does_not_cost_the_others(routes: Routes) -> None:
    events = [one("1001", "a@example.com"), one("1002", SURROGATE), one("1003", "c@example.com")]
    status, answer = call(routes.optout, optout_event("POST", body=f"[{','.join(events)}]".encode(), headers=JSON))
    queued = {m["profile_key"] for m in routes.messages(routes.optout_queue)}
    assert status == 202 and queued == {1001, 1002, 1003}, (status, answer, queued)


def test_a_lone_surrogate_in_the_topic_is_a_refused_field(routes: Routes) -> None:
    body = json.dumps({"event": "email.unsubscribe", "profile_key": "1001", "topic_discriminator": "news\udc80"})
    status, answer = call(routes.optout, optout_event("POST", body=body.encode(), headers=JSON))
    assert status == 400 and answer["field"] == "topic_discriminator", answer
    assert routes.messages(routes.optout_queue) == []
