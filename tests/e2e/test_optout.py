"""Issue 6 on the local stack: APSIS One opt-outs flow back to Efficy, and nothing opts the person in again.

Driven as an outside script would: the APSIS simulator's unsubscribe (which calls our route the way the
automation's Webhook node does), the Efficy simulator, the stack's tables and queues, and the CLI.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.support import ROOT, Stack, person, sign, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

NEWS = "usercreated.topics.newsletter-ab12"  # CRM profile 12, email
SMS = "usercreated.topics.sms-offers-cd34"  # CRM profile 13, sms
EVENTS = "usercreated.topics.events-ef56"  # CRM profile 14, email


# ---- helpers ---------------------------------------------------------------------------------------------------


def consents(stack: Stack, key: int) -> dict[str, str]:
    profile = stack.profile(key) or {}
    return {c["topic"]: c["type"] for c in profile.get("consents", [])}


def synced(stack: Stack, key: int, profiles: list[int], **fields: Any) -> None:
    """A person in Efficy and in APSIS One, opted in to the topics of `profiles`."""
    stack.seed([person(key, profiles=profiles, **fields)])
    stack.edit(key, FIRSTNAME="Ada")  # the simulator sends the signed webhook
    topics = {12: NEWS, 13: SMS, 14: EVENTS}
    wanted = {topics[p]: "opt-in" for p in profiles}
    wait_for("the person opted in in APSIS One", lambda: consents(stack, key) == wanted, timeout=30)
    idle(stack)


def idle(stack: Stack, timeout: float = 30) -> None:
    """Every message so far fully processed (Stack.idle): the event a "nothing happened" check waits for."""
    stack.idle(timeout)


def unsubscribe(stack: Stack, key: int, topic: str | None = NEWS, channel: str = "email", **extra: Any) -> dict:
    body = {"profile_key": str(key), "topic": topic, "channel": channel, **extra}
    response = stack.http.post(f"{stack.apsis_url}/_sim/unsubscribe", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def post_optout(stack: Stack, body: Any, token: str | None = None, integration_id: str = "demo") -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Apsis-Webhook-Token"] = token
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return stack.http.post(
        f"{stack.api_url}/integrations/{integration_id}/apsis/optout", data=raw, headers=headers, timeout=30
    )


def profiles_in_efficy(stack: Stack, key: int) -> set[int]:
    return set((stack.efficy_person(key) or {}).get("profiles", []))


def optout_records(stack: Stack, key: int, integration_id: str = "demo") -> dict[str, dict[str, Any]]:
    """The person's OPTOUTS item, read straight from the state table."""
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.names["StateTable"],
            Key={"pk": {"S": f"PERSON#{integration_id}#{key}"}, "sk": {"S": "OPTOUTS"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    if not item:
        return {}
    return {
        slot: {name: next(iter(value.values())) for name, value in record["M"].items()}
        for slot, record in item["records"]["M"].items()
    }


def state_doc(stack: Stack, key: int) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(
        TableName=stack.names["StateTable"],
        Key={"pk": {"S": f"PERSON#demo#{key}"}, "sk": {"S": "STATE"}},
        ConsistentRead=True,
    )
    return json.loads(item["Item"]["doc"]["S"]) if "Item" in item else {}


def consent_calls(stack: Stack) -> int:
    return sum(
        n for route, n in stack.apsis_calls().items() if route.endswith("/consents") and route.startswith("POST")
    )


def apsis_writes(stack: Stack) -> int:
    return sum(
        n
        for route, n in stack.apsis_calls().items()
        if route.split(" ", 1)[0] in {"POST", "PATCH", "PUT", "DELETE"} and "/oauth/" not in route
    )


# ---- the write-back --------------------------------------------------------------------------------------------


def test_an_unsubscribe_soon_after_our_opt_in_is_sent_again_once(stack: Stack, key: int) -> None:
    """Our opt-in went out seconds before the unsubscribe: which one APSIS One holds cannot be told from the
    times, so the write-back sends the opt-out once more; the echo still sends nothing."""
    synced(stack, key, [12])
    consents_before = consent_calls(stack)
    unsubscribe(stack, key, NEWS)
    wait_for("the write-back", lambda: 12 not in profiles_in_efficy(stack, key), timeout=30)
    stack.http.post(f"{stack.efficy_url}/_sim/webhooks/flush", json={}, timeout=15)
    idle(stack)
    assert consent_calls(stack) - consents_before == 1
    assert consents(stack, key) == {NEWS: "opt-out"}


def test_unsubscribe_in_apsis_removes_the_person_from_the_mapped_crm_profile(stack: Stack, key: int) -> None:
    synced(stack, key, [12, 14])
    unsubscribe(stack, key, NEWS)

    # Usually about a second; `make bench` measures the round trip (bench.realtime.optout_latency).
    wait_for("the person out of CRM profile 12", lambda: 12 not in profiles_in_efficy(stack, key), timeout=30)
    assert 14 in profiles_in_efficy(stack, key), "only the profile mapped to the unsubscribed topic changes"

    record = wait_for(
        "the confirmed opt-out record",
        lambda: optout_records(stack, key).get(f"{NEWS}|email", {}).get("confirmed") and optout_records(stack, key),
        timeout=30,
    )[f"{NEWS}|email"]
    assert record["source"] == "apsis" and record["event"] == "email.unsubscribe"
    assert record["topic"] == NEWS and record["channel"] == "email"
    assert record["awaiting_writeback"] is False
    assert record["confirmed_stamp"] == stack.efficy_person(key)["D_CHANGE"]
    idle(stack)
    assert consents(stack, key) == {NEWS: "opt-out", EVENTS: "opt-in"}
    assert "newsletter-readers" not in (stack.profile(key) or {}).get("tags", [])


def backdate_opt_in(stack: Stack, key: int, slot: str, hours: int = 1) -> None:
    """As if we had opted the person in `hours` ago (tests cannot wait that long): an opt-in sent close to an
    unsubscribe may have overwritten it, so the product double-checks those; this one is long settled."""
    table = stack.names["StateTable"]
    ddb = stack.client("dynamodb")
    key_attrs = {"pk": {"S": f"PERSON#demo#{key}"}, "sk": {"S": "STATE"}}
    item = ddb.get_item(TableName=table, Key=key_attrs, ConsistentRead=True)["Item"]
    doc = json.loads(item["doc"]["S"])
    then = datetime.now(UTC) - timedelta(hours=hours)
    doc["opted_in_at"][slot] = then.isoformat(timespec="seconds").replace("+00:00", "Z")
    item["doc"] = {"S": json.dumps(doc)}
    ddb.put_item(TableName=table, Item=item)


def test_loop_guard_our_own_write_back_echo_costs_no_apsis_call(stack: Stack, key: int) -> None:
    synced(stack, key, [12])
    backdate_opt_in(stack, key, f"{NEWS}|email")
    writes_before, consents_before = apsis_writes(stack), consent_calls(stack)
    unsubscribe(stack, key, NEWS)
    wait_for("the write-back", lambda: 12 not in profiles_in_efficy(stack, key), timeout=30)
    stamp = stack.efficy_person(key)["D_CHANGE"]
    wait_for("the write-back's own sync", lambda: state_doc(stack, key).get("change_stamp") == stamp)
    assert consent_calls(stack) == consents_before, "the opt-out was sent back to APSIS One"
    assert apsis_writes(stack) - writes_before == 1, "only the profile tag of CRM profile 12 should go"

    # Efficy announces our own removal (user API): that echo goes through the real-time worker for nothing.
    writes = apsis_writes(stack)
    stack.http.post(f"{stack.efficy_url}/_sim/webhooks/flush", json={}, timeout=15)
    idle(stack)
    assert apsis_writes(stack) == writes, "the echo of our own write-back called APSIS One"

    # The echo, delivered again (Efficy retries webhooks): still nothing to send.
    record = {"table": 11000, "key": key, "operation": "Update", "fields": {"PROFILES": []}, "date": stamp + "Z"}
    assert stack.signed_webhook([record]).status_code == 202
    idle(stack)
    assert apsis_writes(stack) == writes
    assert consents(stack, key) == {NEWS: "opt-out"}


def test_abuse_report_opts_out_of_every_mapped_email_subscription(stack: Stack, key: int) -> None:
    synced(stack, key, [12, 13, 14])
    unsubscribe(stack, key, None, kind="abuse")
    wait_for("both e-mail profiles emptied", lambda: profiles_in_efficy(stack, key) == {13}, timeout=30)
    idle(stack)
    records = optout_records(stack, key)
    assert set(records) == {f"{NEWS}|email", f"{EVENTS}|email"}
    assert all(r["event"] == "email.abuse" for r in records.values())
    assert consents(stack, key) == {NEWS: "opt-out", EVENTS: "opt-out", SMS: "opt-in"}


def test_sms_unsubscribe_removes_the_sms_profile_only(stack: Stack, key: int) -> None:
    synced(stack, key, [12, 13])
    unsubscribe(stack, key, SMS, channel="sms")
    wait_for("the SMS profile emptied", lambda: profiles_in_efficy(stack, key) == {12}, timeout=30)
    assert set(optout_records(stack, key)) == {f"{SMS}|sms"}


def test_without_a_profile_key_every_contact_with_the_address_is_opted_out(stack: Stack, key: int) -> None:
    shared = f"family{key}@example.com"
    stack.seed([person(key, EMAIL1=shared), person(key + 1, EMAIL1=shared), person(key + 2)])
    body = {"event": "email.unsubscribe", "email": shared, "topic_discriminator": NEWS, "occurred_at": None}
    response = post_optout(stack, body, stack.demo["optout_token"])
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}
    wait_for(
        "both contacts with the address out of profile 12",
        lambda: 12 not in profiles_in_efficy(stack, key) and 12 not in profiles_in_efficy(stack, key + 1),
        timeout=30,
    )
    assert profiles_in_efficy(stack, key + 2) == {12}
    assert f"{NEWS}|email" in optout_records(stack, key + 1)


# ---- the route -------------------------------------------------------------------------------------------------


def test_wrong_or_missing_token_is_401_and_nothing_is_enqueued(stack: Stack, key: int) -> None:
    idle(stack)  # what earlier tests of this worker queued is done
    stack.seed([person(key)])
    body = {"event": "email.unsubscribe", "profile_key": str(key), "topic_discriminator": NEWS}
    for token in ("not-the-token", None):
        response = post_optout(stack, body, token)
        assert response.status_code == 401, response.text
        assert "X-Apsis-Webhook-Token" in response.json()["error"]
    # Nothing queued, visible or in flight: the route enqueues before it answers, and a message leaves the queue
    # only once its write-back returned, so a refused request that got through would show below.
    assert stack.queue_depth("OptOutQueue") == 0
    assert profiles_in_efficy(stack, key) == {12}
    assert optout_records(stack, key) == {}

    # the same request with the right token goes through: the test above can fail
    assert post_optout(stack, body, stack.demo["optout_token"]).status_code == 202
    wait_for("the write-back", lambda: profiles_in_efficy(stack, key) == set(), timeout=30)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        ([1, 2], "[0]"),  # an array is read as several events: the first is not one
        ({"event": "email.bounce", "profile_key": "1", "topic_discriminator": NEWS}, "event"),
        ({"event": "email.unsubscribe", "profile_key": "1"}, "topic_discriminator"),
        ({"event": "email.unsubscribe", "profile_key": "abc", "topic_discriminator": NEWS}, "profile_key"),
        ({"event": "email.unsubscribe", "topic_discriminator": NEWS}, "profile_key"),
        ({"event": "sms.unsubscribe", "profile_key": "1", "topic_discriminator": SMS,
          "channel_discriminator": "com.apsis1.channels.email"}, "channel_discriminator"),
        ({"event": "email.unsubscribe", "email": "nope", "topic_discriminator": NEWS}, "email"),
    ],
)  # fmt: skip
def test_malformed_body_is_400_naming_the_field_and_nothing_is_enqueued(stack: Stack, body: Any, field: str) -> None:
    idle(stack)
    response = post_optout(stack, body, stack.demo["optout_token"])
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert field in response.json()["error"]
    assert stack.queue_depth("OptOutQueue") == 0


def test_an_unreadable_time_or_address_beside_a_profile_key_still_opts_the_person_out(stack: Stack, key: int) -> None:
    """The Webhook node does not resend a refused call: optional fields we cannot use are set aside, not refused."""
    synced(stack, key, [12])
    idle(stack)
    body = {"event": "email.unsubscribe", "profile_key": str(key), "topic_discriminator": NEWS,
            "occurred_at": "yesterday", "email": "Jane Doe, no address"}  # fmt: skip
    response = post_optout(stack, body, stack.demo["optout_token"])
    assert response.status_code == 202 and response.json()["accepted"] == 1, response.text
    wait_for("the write-back", lambda: profiles_in_efficy(stack, key) == set(), timeout=30)


def test_an_unmapped_subscription_is_recorded_and_not_written_back(stack: Stack, key: int) -> None:
    """Kept for the day a mapping to it is added (that sync must not opt the person in again)."""
    synced(stack, key, [12])
    body = {"event": "email.unsubscribe", "profile_key": str(key), "topic_discriminator": "usercreated.topics.other"}
    response = post_optout(stack, body, stack.demo["optout_token"])
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1 and "recorded, not written back" in response.json()["unmapped"]
    idle(stack)
    item = stack.client("dynamodb").get_item(
        TableName=stack.names["StateTable"],
        Key={"pk": {"S": f"PERSON#demo#{key}"}, "sk": {"S": "OPTOUTS"}},
        ConsistentRead=True,
    )["Item"]
    assert "usercreated.topics.other|email" in json.dumps(item)
    assert profiles_in_efficy(stack, key) == {12} and consents(stack, key) == {NEWS: "opt-in"}


def test_unknown_integration_is_404(stack: Stack) -> None:
    body = {"event": "email.unsubscribe", "profile_key": "1", "topic_discriminator": NEWS}
    assert post_optout(stack, body, "x", integration_id="nobody").status_code == 404


def test_the_efficy_webhook_secret_does_not_open_the_opt_out_route(stack: Stack, key: int) -> None:
    """The Efficy webhook's credentials do not open the opt-out route (separate secrets)."""
    body = json.dumps({"event": "email.unsubscribe", "profile_key": str(key), "topic_discriminator": NEWS}).encode()
    headers = sign(stack.demo["webhook_secret"], body)
    headers["X-Apsis-Webhook-Token"] = stack.demo["webhook_secret"]
    response = stack.http.post(
        f"{stack.api_url}/integrations/demo/apsis/optout", data=body, headers=headers, timeout=30
    )
    assert response.status_code == 401


# ---- stickiness: a full sync while the write-back fails ----------------------------------------------------------


@dataclass
class OwnCrm:
    """An integration with simulators of its own (no query tags), so the full sync below is small and the call
    counts are this test's alone; the handlers, queues, tables and state machine are the stack's."""

    integration_id: str
    efficy: EfficySimulator
    apsis: ApsisSimulator
    apsis_credentials: tuple[str, str]

    def consents(self, key: int) -> dict[str, str]:
        profile = self.apsis.get_profile("com.apsis1.keyspaces.crm-id", str(key)) or {}
        return {c["topic"]: c["type"] for c in profile.get("consents", [])}

    def profiles(self, key: int) -> set[int]:
        return set((self.efficy.get_person(key) or {}).get("profiles", []))


@pytest.fixture
def own_crm(stack: Stack, tmp_path: Path) -> Iterator[OwnCrm]:
    integration_id = f"optout-{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}-{secrets.token_hex(3)}"
    api_key, webhook_secret, token = secrets.token_hex(16), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    client_id, client_secret = "oo-" + secrets.token_hex(4), secrets.token_urlsafe(16)
    efficy = EfficySimulator(api_key=api_key).start()
    apsis = ApsisSimulator(client_id=client_id, client_secret=client_secret).start()
    try:
        names = {k: f"efficy-sync/{integration_id}/{k}" for k in ("efficy", "webhook", "apsis", "apsis-optout")}
        values = {
            "efficy": api_key,
            "webhook": webhook_secret,
            "apsis": json.dumps({"client_id": client_id, "client_secret": client_secret}),
            "apsis-optout": token,
        }
        for kind, name in names.items():
            stack.client("secretsmanager").create_secret(Name=name, SecretString=values[kind])
        cfg = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
        cfg["integration_id"] = integration_id
        cfg["efficy"].update(
            base_url=f"{efficy.url}/crm", api_key_secret=names["efficy"], webhook_secret_secret=names["webhook"]
        )
        cfg["apsis"].update(
            base_url=apsis.url, credentials_secret=names["apsis"], optout_token_secret=names["apsis-optout"]
        )
        cfg["tags"]["queries"] = []
        path = tmp_path / f"{integration_id}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        stack.cli("config", "apply", str(path), "--by", "tests", check=True)
        efficy.configure_webhook(
            f"{stack.api_url}/integrations/{integration_id}/efficy/webhook", webhook_secret, mode="hmac", batch_ms=100
        )
        apsis.configure_webhook(
            f"{stack.api_url}/integrations/{integration_id}/apsis/optout", headers={"X-Apsis-Webhook-Token": token}
        )
        yield OwnCrm(integration_id, efficy, apsis, (client_id, client_secret))
    finally:
        efficy.stop()
        apsis.stop()


def full_sync_available(stack: Stack) -> bool:
    return stack.cli("full-sync", "start", "--help", timeout=60).returncode == 0


def test_full_sync_during_a_failing_write_back_does_not_opt_the_person_in_again(
    stack: Stack, own_crm: OwnCrm, key: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two persons opt out while Efficy fails the write-back, then a full sync reads both as members:
    `synced` was created by our real-time sync; `migrated` came from APSIS's own connector, so APSIS One holds
    their profile and we have no state for them yet (only the recorded opt-out): without the sticky record the
    page would opt them in again."""
    crm = own_crm
    synced, migrated = key, key + 1
    crm.efficy.upsert_persons([person(synced, profiles=[12]), person(migrated, profiles=[12])])
    crm.efficy.patch_person(synced, {"FIRSTNAME": "Ada"})  # real-time sync creates the person in APSIS One
    apsis = ApsisClient(crm.apsis.url, *crm.apsis_credentials, section="com.apsis1.sections.default")
    apsis.create_profile(str(migrated))
    apsis.patch_attributes(str(migrated), {"com.apsis1.attributes.email": f"p{migrated}@example.com"})
    apsis.set_consent(str(migrated), NEWS, "email", "opt-in")
    wait_for("the opt-in in APSIS One", lambda: crm.consents(synced) == {NEWS: "opt-in"}, timeout=30)
    idle(stack)

    # The route answers (and has read this integration's config) before the automation's first call: under
    # load, a cold first call could outlast the simulated Webhook node's short timeout.
    assert post_optout(stack, {}, None, integration_id=crm.integration_id).status_code == 401

    # Efficy fails every JSON-RPC call, so the write-back cannot remove anyone (the export API still works).
    crm.efficy.add_fault(path_regex=r"^/crm/json$", status=503)
    for each in (synced, migrated):
        crm.apsis.unsubscribe(str(each), NEWS, "email")  # the automation calls our route
    for each in (synced, migrated):
        wait_for(
            "the opt-out recorded before Efficy is touched",
            lambda k=each: (
                optout_records(stack, k, crm.integration_id).get(f"{NEWS}|email", {}).get("awaiting_writeback")
                or (crm.apsis.deliveries()[-1]["status"] == "dead_letter" and pytest.fail(str(crm.apsis.deliveries())))
            ),
            timeout=40,
        )

    if full_sync_available(stack):
        result = stack.cli("full-sync", "start", crm.integration_id, "--follow", timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        status = stack.cli("full-sync", "status", crm.integration_id, "--format", "json", timeout=60, check=True)
        run = json.loads(status.stdout)
        assert run["status"].lower() == "succeeded", run
        assert run["counters"].get("persons") == 2, run  # the page read both, members in Efficy
        assert not any(name.startswith("consent+") for name in run["counters"]), run  # and opted nobody in
    else:  # the full sync is not built yet: do what one of its pages does, in this process
        run_page_in_process(stack, crm, [synced, migrated], monkeypatch)

    for each in (synced, migrated):
        assert crm.profiles(each) == {12}, "the write-back should still be failing: the page saw a member"
        assert crm.consents(each) == {NEWS: "opt-out"}, f"the full sync opted person {each} in again"
        assert optout_records(stack, each, crm.integration_id)[f"{NEWS}|email"]["awaiting_writeback"] is True

    crm.efficy.clear_faults()  # Efficy is back: the queued write-backs complete
    for each in (synced, migrated):
        wait_for("the write-back after the fault", lambda k=each: crm.profiles(k) == set(), timeout=40)
        wait_for(
            "the confirmation",
            lambda k=each: optout_records(stack, k, crm.integration_id)[f"{NEWS}|email"].get("confirmed"),
            timeout=30,
        )
    idle(stack)
    assert crm.consents(synced) == crm.consents(migrated) == {NEWS: "opt-out"}


def run_page_in_process(stack: Stack, crm: OwnCrm, keys: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A full-sync page as its worker runs it: the persons from Efficy's export API, their stored states, and
    the same PersonSyncer, against the stack's table and the integration's simulators."""
    from efficy_sync import aws, connections
    from efficy_sync import secrets as shared_secrets
    from efficy_sync.mapping import needed_fields
    from efficy_sync.settings import settings
    from efficy_sync.store.configs import ConfigStore
    from efficy_sync.store.persons import PersonStateStore
    from efficy_sync.sync import PersonSyncer

    for name, value in stack.env().items():
        if name.startswith(("AWS_", "CONFIG_", "STATE_", "CONTACT_", "OPTOUT_")):
            monkeypatch.setenv(name, value)
    for reset in (aws.reset_clients, shared_secrets.reset, settings.cache_clear):
        reset()
    try:
        cfg = ConfigStore(stack.names["ConfigTable"]).get(crm.integration_id)
        states = PersonStateStore(stack.names["StateTable"])
        efficy = connections.efficy_client(cfg)  # the factory every Lambda uses
        persons = efficy.list_persons_page(0, 500, needed_fields(cfg), include_profiles=True, ids=keys)
        known = states.get_many(cfg.integration_id, keys)
        syncer = PersonSyncer(cfg, connections.apsis_client(cfg), states, email_lookup=connections.email_lookup(cfg))
        for p in persons:
            syncer.sync(p["K_CONTACT"], p, known.get(p["K_CONTACT"]))
    finally:
        connections.forget(crm.integration_id)
        monkeypatch.undo()
        for reset in (aws.reset_clients, shared_secrets.reset, settings.cache_clear):
            reset()
