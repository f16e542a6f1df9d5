"""Issue 16 on the local stack: the webhook's url_token and hmac_body modes, and opt-outs sent as GET parameters.

A stack of this module's own runs with the handlers' logs on (DEBUG, powertools logging every incoming event,
query string included), so the tests can also show that no log line holds a token or a webhook secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, Stack, person, unique_key, wait_for

# loud_stack (tests/conftest.py) is shared with test_logs_no_pii, grouped to one worker under --dist loadgroup
pytestmark = [pytest.mark.stack, pytest.mark.timeout(180), pytest.mark.xdist_group("loud_stack")]

NEWS = "usercreated.topics.newsletter-ab12"  # CRM profile 12, email


def integration(stack: Stack, workdir: Path, **auth: Any) -> str:
    """An integration like `demo` (same simulators and secrets) whose webhook authenticates with `auth`."""
    efficy = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())["efficy"]
    efficy.update(base_url=f"{stack.efficy_url}/crm", auth=auth)
    return stack.create_integration(workdir, efficy=efficy)


def records(key: int) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json.dumps(
        {"database": "sim", "records": [{"table": 11000, "key": key, "operation": "Update", "date": now}]}
    ).encode()


def webhook_url(stack: Stack, integration_id: str) -> str:
    return f"{stack.api_url}/integrations/{integration_id}/efficy/webhook"


def assert_not_logged(stack: Stack, *secrets: str) -> None:
    text = stack.log_path.read_text()
    assert '"queryStringParameters"' in text  # events are logged: the check below means something
    leaked = [s[:4] + "..." for s in secrets if s in text]
    assert not leaked, f"secrets in the logs: {leaked}"


def test_url_token_mode_accepts_the_token_in_the_url_and_never_logs_it(loud_stack: Stack, tmp_path: Path) -> None:
    stack = loud_stack
    secret = stack.demo["webhook_secret"]
    integration_id = integration(stack, tmp_path, mode="url_token")
    key, by_sim = unique_key(), unique_key()
    stack.seed([person(key), person(by_sim)])
    url = webhook_url(stack, integration_id)
    headers = {"Content-Type": "application/json"}  # no authentication header at all

    response = stack.http.post(url, params={"token": secret}, data=records(key), headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    wait_for("the person synced to APSIS One", lambda: stack.profile(key), timeout=30)

    for params in ({"token": secret + "x"}, {"token": ""}, {}):
        refused = stack.http.post(url, params=params, data=records(key + 1), headers=headers, timeout=30)
        assert refused.status_code == 401 and "token" in refused.json()["error"], refused.text

    # The Efficy simulator sends in this mode too: the secret in the registered URL, no header.
    hook = {"url": url, "secret": secret, "mode": "url_token", "batch_ms": 100}
    stack.http.post(f"{stack.efficy_url}/_sim/webhooks", json=hook, timeout=10).raise_for_status()
    try:
        stack.edit(by_sim, FIRSTNAME="Tokened")
        wait_for("the simulator's call synced", lambda: (stack.profile(by_sim) or {}).get("attributes"), timeout=30)
    finally:
        demo = {"url": webhook_url(stack, "demo"), "secret": secret, "mode": "hmac", "batch_ms": 200}
        stack.http.post(f"{stack.efficy_url}/_sim/webhooks", json=demo, timeout=10).raise_for_status()
    deliveries = stack.http.get(f"{stack.efficy_url}/_sim/webhooks/deliveries", timeout=10).json()["deliveries"]
    assert any(d["mode"] == "url_token" and d["status"] == "delivered" for d in deliveries)
    assert stack.profile(key + 1) is None  # the refused calls queued nothing
    assert_not_logged(stack, secret)


def test_hmac_body_mode_with_x_justin_signature(loud_stack: Stack, tmp_path: Path) -> None:
    stack = loud_stack
    secret = stack.demo["webhook_secret"]
    integration_id = integration(stack, tmp_path, mode="hmac_body", signature_header="X-Justin-Signature")
    key = unique_key()
    stack.seed([person(key)])
    body = records(key)
    good = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    url = webhook_url(stack, integration_id)

    wrong = "sha256=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    refused = stack.http.post(url, data=body, headers={"X-Justin-Signature": wrong}, timeout=30)
    assert refused.status_code == 401 and "X-Justin-Signature" in refused.json()["error"]
    altered = good[:-1] + ("1" if good.endswith("0") else "0")
    assert stack.http.post(url, data=body, headers={"X-Justin-Signature": altered}, timeout=30).status_code == 401

    accepted = stack.http.post(url, data=body, headers={"X-Justin-Signature": good}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    wait_for("the person synced to APSIS One", lambda: stack.profile(key), timeout=30)
    assert_not_logged(stack, secret)


def test_hmac_body_mode_reads_the_generic_connectors_bare_lists(loud_stack: Stack, tmp_path: Path) -> None:
    """Efficy 12.1 implements APSIS's generic connector, whose sender posts a bare list of `record_id` items
    (records, and consents with `has_consented`): refused with 400 and never retried, every change of such an
    installation was lost, CRM opt-outs included."""
    stack = loud_stack
    secret = stack.demo["webhook_secret"]
    integration_id = integration(stack, tmp_path, mode="hmac_body", signature_header="X-Justin-Signature")
    url = webhook_url(stack, integration_id)
    key = unique_key()

    def send(items: list[dict[str, Any]]) -> None:
        body = json.dumps(items).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        response = stack.http.post(url, data=body, headers={"X-Justin-Signature": signature}, timeout=30)
        assert response.status_code == 202 and response.json()["accepted"] == len(items), response.text

    def consent() -> str | None:
        found = [c["type"] for c in (stack.profile(key) or {}).get("consents", []) if c["topic"] == NEWS]
        return found[0] if found else None

    stack.seed([person(key, profiles=[12])])
    send([{"record_id": str(key), "operation": "created"}])
    wait_for("the person created and opted in", lambda: consent() == "opt-in", timeout=30)

    stack.seed([person(key, profiles=[])])  # unticked in the CRM; the consent webhook says so
    send([{"record_id": key, "consent_base_id": 12, "has_consented": False}])
    wait_for("the CRM opt-out in APSIS One", lambda: consent() == "opt-out", timeout=30)


def _synced_in_newsletter(stack: Stack, key: int) -> None:
    stack.seed([person(key, profiles=[12])])
    stack.edit(key, FIRSTNAME="Ada")  # the simulator's signed webhook (demo integration, hmac mode)
    wait_for(
        "the person opted in in APSIS One",
        lambda: any(c["topic"] == NEWS for c in (stack.profile(key) or {}).get("consents", [])),
        timeout=30,
    )


def _idle(stack: Stack) -> None:
    wait_for(
        "idle queues",
        lambda: stack.queue_depth("ContactChangesQueue") == 0 and stack.queue_depth("OptOutQueue") == 0,
        timeout=30,
    )


def _profiles(stack: Stack, key: int) -> set[int]:
    return set((stack.efficy_person(key) or {}).get("profiles", []))


def test_a_get_opt_out_with_fields_and_token_as_url_parameters_is_written_back(loud_stack: Stack) -> None:
    stack = loud_stack
    token = stack.demo["optout_token"]
    url = f"{stack.api_url}/integrations/demo/apsis/optout"
    key = unique_key()
    _synced_in_newsletter(stack, key)
    fields = {"event": "email.unsubscribe", "profile_key": str(key), "topic_discriminator": NEWS}

    for wrong in ({"token": token[:-1]}, {}):
        refused = stack.http.get(url, params={**fields, **wrong}, timeout=30)
        assert refused.status_code == 401, refused.text
    _idle(stack)
    assert 12 in _profiles(stack, key)  # a wrong token changed nothing

    accepted = stack.http.get(url, params={**fields, "token": token}, timeout=30)
    assert accepted.status_code == 202 and accepted.json() == {"accepted": 1}, accepted.text
    wait_for("the opt-out written back to Efficy", lambda: 12 not in _profiles(stack, key), timeout=30)
    assert_not_logged(stack, token)


def test_the_apsis_automation_can_call_with_get_parameters(loud_stack: Stack) -> None:
    stack = loud_stack
    token = stack.demo["optout_token"]
    url = f"{stack.api_url}/integrations/demo/apsis/optout"
    key = unique_key()
    _synced_in_newsletter(stack, key)
    node = {"url": f"{url}?token={token}", "method": "GET", "body_format": "query"}
    stack.http.post(f"{stack.apsis_url}/_sim/webhooks", json=node, timeout=10).raise_for_status()
    try:
        reply = stack.http.post(
            f"{stack.apsis_url}/_sim/unsubscribe", json={"profile_key": str(key), "topic": NEWS}, timeout=10
        )
        reply.raise_for_status()
        wait_for("the opt-out written back to Efficy", lambda: 12 not in _profiles(stack, key), timeout=30)
    finally:
        demo = {"url": url, "headers": {"X-Apsis-Webhook-Token": token}}
        stack.http.post(f"{stack.apsis_url}/_sim/webhooks", json=demo, timeout=10).raise_for_status()
    assert_not_logged(stack, token)
