"""The opt-out route with what a real APSIS One Webhook node may send that our simulator never does.

The node sends whatever its owner set up (contracts/apsis-one.md §9) and does not resend a refused call, so a
400 loses a legal opt-out: several events as a JSON array, a form without (or with the wrong) Content-Type, a
UTF-8 byte-order mark, a topic spelled in another case than the mapping. Each case fails on the route before
it accepted them (the route's handler in process, moto SQS behind, as test_ingest_routes builds them).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from tests.integration.test_ingest_routes import (  # noqa: F401  (routes is the fixture)
    OPTOUT_TOKEN,
    Routes,
    call,
    optout_event,
    routes,
)
from tests.unit.consent_configs import NEWS

TOKEN = {"X-Apsis-Webhook-Token": OPTOUT_TOKEN}
JSON = {**TOKEN, "Content-Type": "application/json"}
FIELDS = {"event": "email.unsubscribe", "profile_key": "1001", "topic_discriminator": NEWS}


def post(routes: Routes, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    return call(routes.optout, optout_event("POST", body=body, headers=headers))


def test_a_json_array_of_events_queues_each_of_them(routes: Routes) -> None:
    body = json.dumps([FIELDS, {**FIELDS, "profile_key": "1002"}]).encode()
    assert post(routes, body, JSON) == (202, {"accepted": 2})
    assert sorted(m["profile_key"] for m in routes.messages(routes.optout_queue)) == [1001, 1002]


def test_the_valid_events_of_an_array_are_taken_and_the_wrong_ones_named(routes: Routes) -> None:
    """The node does not resend a refused call: one typo refused the whole array and lost every opt-out in it."""
    body = json.dumps([FIELDS, {**FIELDS, "profile_key": "jane"}, {**FIELDS, "profile_key": "1003"}]).encode()
    status, answer = post(routes, body, JSON)
    assert status == 202 and answer["accepted"] == 2, answer
    assert [(r["index"], r["field"]) for r in answer["refused"]] == [(1, "[1].profile_key")]
    assert "jane" not in json.dumps(answer)
    assert sorted(m["profile_key"] for m in routes.messages(routes.optout_queue)) == [1001, 1003]
    # every event wrong, or no event at all: refused, naming the first
    status, answer = post(routes, json.dumps([{**FIELDS, "profile_key": "x"}, {"event": "nope"}]).encode(), JSON)
    assert (status, answer["field"]) == (400, "[0].profile_key")
    status, answer = post(routes, json.dumps([FIELDS, "x"]).encode(), JSON)
    assert (status, answer["field"]) == (400, "[1]")
    assert post(routes, b"[]", JSON)[0] == 400
    assert len(routes.messages(routes.optout_queue)) == 0  # (drained above) nothing more queued


def test_an_unmapped_event_among_taken_ones_is_reported_and_an_array_may_be_long(routes: Routes) -> None:
    events = [{**FIELDS, "profile_key": str(1000 + n)} for n in range(150)] + [
        {"event": "sms.unsubscribe", "profile_key": "7", "topic_discriminator": "usercreated.topics.x-1"}
    ]
    status, answer = post(routes, json.dumps(events).encode(), JSON)
    assert status == 202 and answer["accepted"] == 151, answer  # the SMS one: recorded, not written back
    assert "unmapped" in answer


def test_json_labelled_as_a_form_is_read_as_json(routes: Routes) -> None:
    form = {**TOKEN, "Content-Type": "application/x-www-form-urlencoded"}
    assert post(routes, json.dumps(FIELDS).encode(), form) == (202, {"accepted": 1})


def test_a_form_without_content_type_or_as_text_plain_is_read_as_a_form(routes: Routes) -> None:
    form = urlencode(FIELDS).encode()
    assert post(routes, form, TOKEN) == (202, {"accepted": 1})
    assert post(routes, form, {**TOKEN, "Content-Type": "text/plain; charset=utf-8"}) == (202, {"accepted": 1})
    assert [m["profile_key"] for m in routes.messages(routes.optout_queue)] == [1001, 1001]
    status, answer = post(routes, b"unsubscribe me", TOKEN)
    assert (status, answer["field"]) == (400, "body")


def test_a_body_with_a_utf8_byte_order_mark(routes: Routes) -> None:
    assert post(routes, b"\xef\xbb\xbf" + json.dumps(FIELDS).encode(), JSON) == (202, {"accepted": 1})
    form = {**TOKEN, "Content-Type": "application/x-www-form-urlencoded"}
    assert post(routes, b"\xef\xbb\xbf" + urlencode(FIELDS).encode(), form) == (202, {"accepted": 1})
    assert len(routes.messages(routes.optout_queue)) == 2


def test_a_topic_in_another_case_reaches_its_mapping_in_the_mappings_spelling(routes: Routes) -> None:
    """It was "unmapped": recorded under a key no mapping reads and never written back to Efficy."""
    assert post(routes, json.dumps({**FIELDS, "topic_discriminator": NEWS.upper()}).encode(), JSON) == (
        202,
        {"accepted": 1},
    )
    (message,) = routes.messages(routes.optout_queue)
    assert message["slots"] == [{"topic": NEWS, "channel": "email"}]


def test_a_mobile_without_plus_or_zero_in_a_json_body_is_not_logged_in_clear(routes: Routes) -> None:
    """APSIS gives phones back without "+": with the event logged whole (as these tests log it), the body's
    mobile passed the scrubber, which masked contact fields by name in forms and query strings only."""
    body = json.dumps({**FIELDS, "mobile": "32470123456", "email": "jane@example.com"}).encode()
    assert post(routes, body, JSON)[0] == 202
    log = routes.log.getvalue()
    assert '"mobile' in log, "the event was not logged: the test shows nothing"
    assert "32470123456" not in log and "jane@example.com" not in log
