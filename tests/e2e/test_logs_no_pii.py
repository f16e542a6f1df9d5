"""The handlers' logs never hold an e-mail address or a phone number in clear, even at DEBUG with events logged.

The loud stack (tests/conftest.py, shared with test_ingest_auth_modes) runs with the handlers' logs on (DEBUG, powertools logging every incoming event:
webhook bodies carry the changed values, e-mails and phone numbers included) and EMF metrics printed. Persons
with known addresses and numbers go through the real path (Efficy webhook -> ingest -> SQS -> apply_changes ->
APSIS), one of them refused by APSIS with an answer that quotes the address. Then the whole log is searched.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from efficy_sync.pii import hash_key

from tests.support import Stack, person, unique_key, wait_for

pytestmark = pytest.mark.xdist_group("loud_stack")  # with test_ingest_auth_modes (see loud_stack)

EMAILISH = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def log_lines(stack: Stack) -> list[dict[str, Any]]:
    """The JSON lines the handlers (logger and EMF metrics) wrote; other lines are the local stack's own."""
    return stack.json_log_lines()


def test_logs_carry_hashed_keys_and_no_email_or_phone(loud_stack: Stack) -> None:
    stack = loud_stack
    base = unique_key()
    plain, national, refused, moved = base + 1, base + 2, base + 3, base + 4
    persons = [person(k) for k in (plain, national, refused, moved)]
    stack.seed(persons)
    # What a CRM user then types in (Efficy's webhook carries the changed values, so the events hold them).
    typed = {
        plain: {"EMAIL1": f"typed.{plain}@example.org", "MOBILE": "+32 470 11 22 33"},
        national: {"EMAIL1": f"typed.{national}@example.org", "MOBILE": "0470112234"},
        refused: {"EMAIL1": f"refused.{refused}@example.org", "MOBILE": "+32470112235"},
        moved: {"EMAIL1": f"typed.{moved}@example.org", "MOBILE": "+32470112236"},
    }
    stack.fault(
        "apsis",
        method="PATCH",
        path_regex=rf"/profiles/{refused}/sections/[^/]+/attributes$",
        status=400,
        content_type="application/problem+json",
        body=json.dumps({"title": "Bad Request", "detail": f"refused.{refused}@example.org is not accepted"}),
    )
    for key, values in typed.items():
        stack.edit(key, FIRSTNAME="Logged", **values)
    new_address = f"moved.{moved}@example.net"
    wait_for("the first sync of the moving person", lambda: stack.profile(moved), timeout=30)
    stack.edit(moved, EMAIL1=new_address)

    hashes = {k: hash_key(k) for k in (plain, national, refused, moved)}

    def applied() -> bool:
        seen = [line for line in log_lines(stack) if line.get("message") == "person applied"]
        return all(sum(line.get("person") == h for line in seen) >= (2 if k == moved else 1) for k, h in hashes.items())

    wait_for("a 'person applied' line for each person", applied, timeout=30)
    stack.clear_faults()

    text = stack.log_path.read_text()
    values = [*persons, *typed.values()]
    secrets = [new_address, *(v["EMAIL1"] for v in values), *(v["MOBILE"] for v in values)]
    secrets += [re.sub(r"\D", "", v["MOBILE"]) for v in values]  # the same numbers without spaces
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"personal data in the logs: {leaked}"
    unmasked = [m for m in EMAILISH.findall(text) if "***@" not in m]
    assert not unmasked, f"unmasked e-mail addresses in the logs: {unmasked[:5]}"
    # nor any of the integration's credentials: the webhooks were signed, every call carried the API key or token
    credentials = credentials_of(stack)
    assert len(credentials) >= 4
    assert not [c for c in credentials if c in text], "a credential in the logs"

    lines = log_lines(stack)
    # The log proves something: events were logged (with their masked values), persons appear by hash.
    logged = json.dumps(lines)
    assert "t***@example.org" in logged and "m***@example.net" in logged  # masked, in the logged events
    assert "+32*****33" in logged and "047*****34" in logged
    assert {hashes[plain], hashes[national], hashes[moved]} <= {line.get("person") for line in lines}
    failed = [line for line in lines if line.get("person") == hashes[refused] and line.get("result") == "failed"]
    assert failed and failed[0]["error_category"] == "rejected_value"
    # EMF metrics include the clients' API calls, counted by the observability layer.
    metrics = [line for line in lines if "_aws" in line]
    assert sum(line.get("ApsisCalls", [0])[0] for line in metrics) > 0
    assert sum(line.get("EfficyCalls", [0])[0] for line in metrics) > 0
    assert any("WebhookRecordsAccepted" in line for line in metrics)


def test_a_change_apsis_refuses_our_credentials_for_names_the_refusal_and_not_the_person(loud_stack: Stack) -> None:
    """APSIS One refuses our credentials (401 to every call, the token request included) for a while: each failed
    receive leaves a WARNING line naming the integration, the person's hash and the category (`permission`), which
    the runbook's queries find (level WARNING, result failed); the batch processor logs nothing above DEBUG, so
    the refusal left no trace until the DLQ, hours later. Then the change lands, and the lines hold no key,
    address or number in clear."""
    stack = loud_stack
    key = unique_key()
    address, number = f"refused.creds.{key}@example.org", "+32470998866"
    stack.seed([person(key)])
    stack.edit(key, FIRSTNAME="Before")
    wait_for("the first sync", lambda: stack.stored_state(key).get("last_outcome") == "synced", timeout=30)
    stack.idle()
    offset = stack.log_path.stat().st_size
    refusal = json.dumps({"title": "Unauthorized", "status": 401, "detail": "invalid client credentials"})
    stack.fault("apsis", path_regex=".", status=401, count=1_000_000, body=refusal, content_type="application/json")

    def refused() -> list[dict[str, Any]]:
        lines = log_lines_after(stack, offset)
        return [line for line in lines if line.get("message") == "change not applied, retried later"]

    try:
        stack.edit(key, FIRSTNAME="During", EMAIL1=address, MOBILE=number)
        found = wait_for("a line naming the refusal", refused, timeout=30)
    finally:
        stack.clear_faults()
    line = found[0]
    assert line["level"] == "WARNING" and line["result"] == "failed", line
    assert line["person"] == hash_key(key) and line["integration_id"] == "demo", line
    assert line["error_category"] == "permission" and line["error"] == "AuthError", line
    wait_for(
        "the change once the credentials are accepted",
        lambda: ((stack.profile(key) or {}).get("attributes") or {}).get("com.apsis1.attributes.firstname") == "During",
        timeout=60,
    )
    stack.idle()
    # the handlers' own lines; the events powertools logs at DEBUG (POWERTOOLS_LOGGER_LOG_EVENT, this stack only)
    # carry the queued message, whose person key is the change itself
    written = json.dumps([line for line in log_lines_after(stack, offset) if not isinstance(line.get("message"), dict)])
    assert address not in written and number not in written and number[1:] not in written
    assert not re.search(rf"(?<!\d){key}(?!\d)", written), "a person key in clear in the logs"


def credentials_of(stack: Stack) -> list[str]:
    """Every secret value of the demo integration (Efficy API key, webhook secret, APSIS client secret, opt-out
    token), as the stack's Secrets Manager holds them."""
    sm = stack.client("secretsmanager")
    values: list[str] = []
    for page in sm.get_paginator("list_secrets").paginate():
        for entry in page["SecretList"]:
            if "/demo/" not in entry["Name"]:
                continue
            value = sm.get_secret_value(SecretId=entry["ARN"])["SecretString"]
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
            values += [v for k, v in parsed.items() if "secret" in k] if isinstance(parsed, dict) else [parsed]
    return [v for v in values if len(v) >= 12]


def log_lines_after(stack: Stack, offset: int) -> list[dict[str, Any]]:
    return stack.json_log_lines(offset)
