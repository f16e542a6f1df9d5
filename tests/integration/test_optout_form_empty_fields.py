"""A form body with an empty field (a trailing `&`, or `&&` between two fields) is a valid
application/x-www-form-urlencoded body (WHATWG URL standard: empty sequences are skipped), and it carries every
field of a legal opt-out. The route refused it with 400 "is not a valid form", and the Webhook node does not
resend a refused call: the opt-out was lost."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.integration.test_ingest_routes import (  # noqa: F401  (routes is the fixture)
    OPTOUT_TOKEN,
    Routes,
    call,
    optout_event,
    routes,
)
from tests.unit.consent_configs import NEWS

FIELDS = {"event": "email.unsubscribe", "profile_key": "1001", "topic_discriminator": NEWS}


@pytest.mark.parametrize("suffix,between", [("&", "&"), ("", "&&")])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_a_form_with_an_empty_field_is_queued(routes: Routes, suffix: str, between: str, content_type) -> None:
    body = (between.join(urlencode({k: v}) for k, v in FIELDS.items()) + suffix).encode()
    headers = {"X-Apsis-Webhook-Token": OPTOUT_TOKEN}
    if content_type:
        headers["Content-Type"] = content_type
    status, answer = call(routes.optout, optout_event("POST", body=body, headers=headers))
    assert (status, answer) == (202, {"accepted": 1})
    (message,) = routes.messages(routes.optout_queue)
    assert message["profile_key"] == 1001
