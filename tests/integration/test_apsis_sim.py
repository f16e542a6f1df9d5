"""The APSIS One simulator honours its contract (contracts/apsis-one.md, DESIGN §5), driven over raw HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.support import ManualClock

SECTION = "com.apsis1.sections.default"
CRM = "com.apsis1.keyspaces.crm-id"
EMAIL = "com.apsis1.channels.email"
SMS = "com.apsis1.channels.sms"
NEWSLETTER = "usercreated.topics.newsletter-ab12"
SMS_OFFERS = "usercreated.topics.sms-offers-cd34"
EVENTS = "usercreated.topics.events-ef56"
FIRSTNAME_V = "6a0e1f52-0003-4a1a-9e01-000000000003"
T = 5  # seconds: bound on every HTTP call


class Receiver:
    """A tiny webhook endpoint: records every call and answers from a script of statuses (then 200)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                is_json = self.headers.get("Content-Type") == "application/json"
                with receiver._lock:
                    receiver.calls.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(body) if is_json else None,
                            "raw": body,
                        }
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/integrations/demo/apsis/optout"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(import_delay_ms=10)
    simulator.webhook_backoff = 0.01
    with simulator:
        yield simulator


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def token(sim: ApsisSimulator) -> str:
    body = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret}
    response = requests.post(f"{sim.url}/oauth/token", json=body, timeout=T)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class Api:
    """Raw authenticated calls, so the tests see status codes exactly as a client would."""

    def __init__(self, sim: ApsisSimulator) -> None:
        self.sim = sim
        self.headers = {"Authorization": f"Bearer {token(sim)}"}

    def __call__(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> requests.Response:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = ctype
        return requests.request(method, self.sim.url + path, data=data, headers=headers, timeout=T)

    def create(self, key: str, keyspace: str = CRM) -> requests.Response:
        return self("POST", f"/audience/keyspaces/{keyspace}/sections/{SECTION}/profiles", {"profile_key": key})

    def attrs(self, key: str, body: Any, ctype: str = "application/merge-patch+json") -> requests.Response:
        return self("PATCH", f"/v2/audience/keyspaces/{CRM}/profiles/{key}/sections/{SECTION}/attributes", body, ctype)

    def consent(self, key: str, topic: str, kind: str, channel: str = EMAIL, keyspace: str = CRM) -> requests.Response:
        body = {"topic_discriminator": topic, "channel_discriminator": channel, "type": kind, "reason": "test"}
        return self("POST", f"/v2/audience/keyspaces/{keyspace}/profiles/{key}/sections/{SECTION}/consents", body)


@pytest.fixture
def api(sim: ApsisSimulator) -> Api:
    return Api(sim)


def problem(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# ---- token ------------------------------------------------------------------------------------------------
def test_token_is_a_jwt_with_exp_and_only_json_bodies_are_accepted(sim: ApsisSimulator) -> None:
    value = token(sim)
    payload = value.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["exp"] - time.time() == pytest.approx(86400, abs=2)
    form = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret}
    problem(requests.post(f"{sim.url}/oauth/token", data=form, timeout=T), 400)
    bad = {**form, "client_secret": "wrong"}
    problem(requests.post(f"{sim.url}/oauth/token", json=bad, timeout=T), 401)


def test_token_endpoint_allows_ten_requests_a_minute(sim: ApsisSimulator) -> None:
    for _ in range(10):
        token(sim)
    body = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret}
    response = requests.post(f"{sim.url}/oauth/token", json=body, timeout=T)
    problem(response, 429)
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_missing_unknown_revoked_and_expired_bearers_are_refused(sim: ApsisSimulator, api: Api) -> None:
    assert api("GET", "/audience/sections").status_code == 200
    problem(requests.get(f"{sim.url}/audience/sections", timeout=T), 401)
    problem(requests.get(f"{sim.url}/audience/sections", headers={"Authorization": "Bearer x.y.z"}, timeout=T), 401)
    requests.post(f"{sim.url}/_sim/tokens/revoke", timeout=T).raise_for_status()
    problem(api("GET", "/audience/sections"), 401)


def test_expired_token_answers_403_when_configured() -> None:
    clock = ManualClock()
    with ApsisSimulator(token_ttl=0.3, expired_token_status=403, clock=clock) as sim:
        api = Api(sim)
        assert api("GET", "/audience/keyspaces").status_code == 200
        clock.advance(0.4)
        problem(api("GET", "/audience/keyspaces"), 403)


# ---- definitions ------------------------------------------------------------------------------------------
def test_definitions_come_from_the_fixture_and_can_be_replaced(sim: ApsisSimulator, api: Api) -> None:
    assert [s["discriminator"] for s in api("GET", "/audience/sections").json()["items"]] == [SECTION]
    keyspaces = api("GET", "/audience/keyspaces").json()["items"]
    assert {k["discriminator"]: k["manage_subscriptions"] for k in keyspaces} == {
        CRM: True,
        "com.apsis1.keyspaces.email": True,
        "com.apsis1.keyspaces.mobile": True,
    }
    attributes = api("GET", f"/audience/sections/{SECTION}/attributes").json()["items"]
    assert {"com.apsis1.attributes.email", "usercreated.attributes.company"} <= {a["discriminator"] for a in attributes}
    assert all(a["versions"][0]["deprecated_at"] is None and a["versions"][0]["id"] for a in attributes)
    topics = api("GET", f"/v2/audience/sections/{SECTION}/topics").json()["items"]
    assert {t["discriminator"]: t["channel_discriminator"] for t in topics} == {
        NEWSLETTER: EMAIL,
        SMS_OFFERS: SMS,
        EVENTS: EMAIL,
    }
    tags = api("GET", f"/audience/sections/{SECTION}/tags").json()["items"]
    assert sorted(t["discriminator"] for t in tags) == ["newsletter-readers", "sms-club", "vip"]
    problem(api("GET", "/audience/sections/nope/attributes"), 404)

    fixture = requests.get(f"{sim.url}/_sim/definitions", timeout=T).json()
    fixture["sections"][0]["tags"] = [{"discriminator": "gold", "name": "gold"}]
    assert requests.post(f"{sim.url}/_sim/definitions", json=fixture, timeout=T).status_code == 200
    assert [t["name"] for t in api("GET", f"/audience/sections/{SECTION}/tags").json()["items"]] == ["gold"]
    assert requests.post(f"{sim.url}/_sim/definitions", json={"sections": []}, timeout=T).status_code == 400


# ---- profiles, attributes, tags -------------------------------------------------------------------------
def test_profile_lifecycle_and_attribute_rules(sim: ApsisSimulator, api: Api) -> None:
    assert api.create("7").status_code == 201
    problem(api.create("7"), 409)
    assert (
        api.attrs("7", {"com.apsis1.attributes.firstname": "Jo", "usercreated.attributes.company": "Acme"}).status_code
        == 204
    )
    assert api.attrs("7", {"usercreated.attributes.company": None}).status_code == 204
    profile = requests.get(f"{sim.url}/_sim/profiles/{CRM}/7", timeout=T).json()
    assert profile["attributes"] == {"com.apsis1.attributes.crmid": "7", "com.apsis1.attributes.firstname": "Jo"}

    problem(api.attrs("8", {"com.apsis1.attributes.firstname": "X"}), 404)
    problem(api.attrs("7", {"usercreated.attributes.shoe-size": "44"}), 400)
    problem(api.attrs("7", {"com.apsis1.attributes.firstname": "x" * 110_000}), 413)
    problem(api.attrs("7", {"com.apsis1.attributes.firstname": "X"}, ctype="application/json"), 415)

    v1 = f"/audience/keyspaces/{CRM}/profiles/9/sections/{SECTION}/attributes"
    assert api("PATCH", v1, {FIRSTNAME_V: "Ann"}, "application/merge-patch+json").status_code == 204
    assert sim.get_profile(CRM, "9")["attributes"]["com.apsis1.attributes.firstname"] == "Ann"
    problem(api("PATCH", v1, {"not-a-version": "Ann"}, "application/merge-patch+json"), 400)

    assert api("DELETE", f"/audience/keyspaces/{CRM}/profiles/7").status_code == 204
    problem(api("DELETE", f"/audience/keyspaces/{CRM}/profiles/7"), 404)
    assert requests.get(f"{sim.url}/_sim/profiles/{CRM}/7", timeout=T).status_code == 404
    assert [p["key"] for p in requests.get(f"{sim.url}/_sim/profiles", timeout=T).json()["profiles"]] == ["9"]


def test_tags_are_merge_patched_and_unknown_tags_refused(sim: ApsisSimulator, api: Api) -> None:
    api.create("1")
    path = f"/audience/keyspaces/{CRM}/profiles/1/sections/{SECTION}/tags"
    assert api("PATCH", path, {"vip": True, "sms-club": True}, "application/merge-patch+json").status_code == 204
    assert api("PATCH", path, {"sms-club": False}, "application/merge-patch+json").status_code == 204
    assert sim.get_profile(CRM, "1")["tags"] == ["vip"]
    problem(api("PATCH", path, {"gold": True}, "application/merge-patch+json"), 400)
    problem(api("PATCH", path, {"vip": "yes"}, "application/merge-patch+json"), 400)


def test_chunked_bodies_are_refused(sim: ApsisSimulator, api: Api) -> None:
    api.create("1")
    headers = {**api.headers, "Content-Type": "application/merge-patch+json"}
    url = f"{sim.url}/v2/audience/keyspaces/{CRM}/profiles/1/sections/{SECTION}/attributes"
    chunks = iter([b'{"com.apsis1.attributes.firstname":', b'"Jo"}'])
    problem(requests.patch(url, data=chunks, headers=headers, timeout=T), 411)


# ---- consents ---------------------------------------------------------------------------------------------
def test_consent_status_codes(sim: ApsisSimulator, api: Api) -> None:
    api.create("1")
    assert api.consent("1", NEWSLETTER, "opt-in").status_code == 201
    problem(api.consent("1", NEWSLETTER, "opt-in"), 409)
    assert api.consent("1", NEWSLETTER, "opt-out").status_code == 204
    assert api.consent("1", SMS_OFFERS, "opt-in", channel=SMS).status_code == 201
    problem(api.consent("1", "usercreated.topics.nope", "opt-in"), 400)
    problem(api.consent("1", SMS_OFFERS, "opt-in", channel=EMAIL), 400)
    problem(api.consent("1", NEWSLETTER, "confirmed-opt-in"), 400)
    problem(api.consent("2", NEWSLETTER, "opt-in"), 404)

    consents = sim.get_profile(CRM, "1")["consents"]
    assert {(c["topic"], c["channel"], c["type"]) for c in consents} == {
        (NEWSLETTER, "email", "opt-out"),
        (SMS_OFFERS, "sms", "opt-in"),
    }
    base = f"/v2/audience/keyspaces/{CRM}/profiles/1/sections/{SECTION}/consents"
    items = api("GET", base + "?consent_types=opt-in").json()["items"]
    assert [(i["topic_discriminator"], i["channel_discriminator"], i["type"]) for i in items] == [
        (SMS_OFFERS, SMS, "opt-in")
    ]
    assert {"source", "reason", "modified_at"} <= set(items[0])
    assert len(api("GET", base).json()["items"]) == 2


def test_consent_noop_can_answer_200_and_keyspaces_without_subscriptions_refuse() -> None:
    with ApsisSimulator(consent_noop_status=200) as sim:
        fixture = sim.definitions()
        fixture["keyspaces"].append({"discriminator": "com.apsis1.keyspaces.export", "manage_subscriptions": False})
        sim.set_definitions(fixture)
        api = Api(sim)
        api.create("1")
        api.create("1", keyspace="com.apsis1.keyspaces.export")
        assert api.consent("1", EVENTS, "opt-in").status_code == 201
        assert api.consent("1", EVENTS, "opt-in").status_code == 200
        problem(api.consent("1", EVENTS, "opt-in", keyspace="com.apsis1.keyspaces.export"), 403)


# ---- throttling -------------------------------------------------------------------------------------------
def test_per_profile_key_limit_answers_429_with_retry_after(sim: ApsisSimulator, api: Api) -> None:
    api.create("1")
    api.create("2")
    statuses = [api.attrs("1", {"com.apsis1.attributes.firstname": str(i)}) for i in range(14)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "14 calls on one key within a second must hit the 10/s limit"
    problem(limited[0], 429)
    assert limited[0].headers["Retry-After"] == "1"
    assert api.attrs("2", {"com.apsis1.attributes.firstname": "other key"}).status_code == 204


def test_account_limit_and_retry_after_switch() -> None:
    with ApsisSimulator(retry_after=False) as sim:
        sim.account_rate = 5
        sim.reset()  # buckets are rebuilt with the new rate
        api = Api(sim)
        responses = [api("GET", "/audience/sections") for _ in range(8)]
        limited = [r for r in responses if r.status_code == 429]
        assert limited
        assert "Retry-After" not in limited[0].headers
    with ApsisSimulator(rate_limits=False) as sim:
        api = Api(sim)
        api.create("1")
        assert all(api.attrs("1", {"com.apsis1.attributes.firstname": "x"}).status_code == 204 for _ in range(15))


# ---- bulk import ------------------------------------------------------------------------------------------
def import_spec() -> dict[str, Any]:
    return {
        "keyspace_mapping": {"keyspace_discriminator": CRM, "field_selector": "crm_id"},
        "options": {"update_existing_profiles": True, "clear_existing_attributes": False},
        "attribute_mappings": [
            {"field_selector": "first", "attribute_version_id": FIRSTNAME_V},
            {"field_selector": "email", "attribute_discriminator": "com.apsis1.attributes.email"},
        ],
        "consent_mappings": [
            {
                "address_field_selector": "email",
                "consents": [
                    {
                        "field_selector": NEWSLETTER,
                        "channel_discriminator": EMAIL,
                        "topic_discriminator": NEWSLETTER,
                        "type": "opt-in",
                        "resubscribe_if_opted_out": False,
                    }
                ],
            }
        ],
        "tag_mappings": [{"field_selector": "vip", "tag_discriminator": "vip"}],
    }


def wait_import(api: Api, import_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        result = api("GET", f"/audience/sections/{SECTION}/imports/{import_id}").json()["result"]
        if result["status"] in ("completed", "error"):
            return result
        time.sleep(0.02)
    raise AssertionError("import did not finish")


def test_import_flow_applies_attributes_consents_and_tags(sim: ApsisSimulator, api: Api) -> None:
    api.create("1")
    api.consent("1", NEWSLETTER, "opt-out")  # opted out earlier: the import must not resubscribe
    created = api("POST", f"/v2/audience/sections/{SECTION}/imports", import_spec())
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["file_upload_url"] == f"{sim.url}/_upload/{job['import_id']}"
    assert job["file_upload_url_expires_at"].endswith("Z")
    status = api("GET", f"/audience/sections/{SECTION}/imports/{job['import_id']}").json()["result"]["status"]
    assert status == "waiting_for_file"

    csv_text = (
        f"crm_id,first,email,{NEWSLETTER},vip\n1,Ann,ann@example.com,1,true\n2,Bob,bob@example.com,1,false\n,X,,,\n"
    )
    upload = requests.post(
        job["file_upload_url"],
        data=job["file_upload_body"],
        files={"file": ("f.csv", csv_text.encode(), "text/csv")},
        timeout=T,
    )
    assert upload.status_code == 204, upload.text
    result = wait_import(api, job["import_id"])
    assert result["status"] == "completed"
    assert result["report"]["rows"] == 3
    assert (result["report"]["created"], result["report"]["updated"], result["report"]["failed"]) == (1, 1, 1)
    assert result["report"]["errors"][0]["row"] == 3

    one, two = sim.get_profile(CRM, "1"), sim.get_profile(CRM, "2")
    assert one["attributes"]["com.apsis1.attributes.firstname"] == "Ann"
    assert one["tags"] == ["vip"] and two["tags"] == []
    assert [c["type"] for c in one["consents"]] == ["opt-out"]
    assert [(c["topic"], c["type"]) for c in two["consents"]] == [(NEWSLETTER, "opt-in")]
    assert sim.calls()["POST /_upload/{import_id}"] == 1


def test_import_limits_and_upload_rules(sim: ApsisSimulator, api: Api) -> None:
    imports = f"/v2/audience/sections/{SECTION}/imports"
    problem(api("POST", imports, {"keyspace_mapping": {"keyspace_discriminator": "nope"}}), 400)
    bad_attribute = {**import_spec(), "attribute_mappings": [{"field_selector": "a", "attribute_version_id": "x"}]}
    problem(api("POST", imports, bad_attribute), 400)
    jobs = [api("POST", imports, import_spec()).json() for _ in range(3)]
    fourth = api("POST", imports, import_spec())
    problem(fourth, 429)
    assert fourth.headers["Retry-After"]

    problem(requests.post(jobs[0]["file_upload_url"], data={"policy": "forged"}, files={"file": b"x"}, timeout=T), 403)
    sim.max_upload_bytes = 1000
    big = requests.post(
        jobs[0]["file_upload_url"], data=jobs[0]["file_upload_body"], files={"file": b"x" * 2000}, timeout=T
    )
    problem(big, 413)
    missing_column = b"crm_id,first\n1,Ann\n"
    ok = requests.post(
        jobs[0]["file_upload_url"], data=jobs[0]["file_upload_body"], files={"file": missing_column}, timeout=T
    )
    assert ok.status_code == 204
    assert wait_import(api, jobs[0]["import_id"])["status"] == "error"
    again = requests.post(
        jobs[0]["file_upload_url"], data=jobs[0]["file_upload_body"], files={"file": missing_column}, timeout=T
    )
    problem(again, 403)
    assert api("POST", imports, import_spec()).status_code == 201  # a finished import frees its slot


def test_import_requests_are_limited_to_ten_a_minute(sim: ApsisSimulator, api: Api) -> None:
    sim.max_pending_imports = 100
    imports = f"/v2/audience/sections/{SECTION}/imports"
    assert all(api("POST", imports, import_spec()).status_code == 201 for _ in range(10))
    problem(api("POST", imports, import_spec()), 429)


def test_an_upload_url_expires(sim: ApsisSimulator, api: Api) -> None:
    sim.import_url_ttl = 0.05
    sim.clock = clock = ManualClock()
    job = api("POST", f"/v2/audience/sections/{SECTION}/imports", import_spec()).json()
    clock.advance(0.1)
    late = requests.post(job["file_upload_url"], data=job["file_upload_body"], files={"file": b"crm_id\n"}, timeout=T)
    problem(late, 403)
    assert wait_import(api, job["import_id"])["status"] == "error"


# ---- opt-out webhook --------------------------------------------------------------------------------------
def configure(sim: ApsisSimulator, receiver: Receiver) -> None:
    body = {"url": receiver.url, "headers": {"X-Apsis-Webhook-Token": "fake-optout-token"}}
    assert requests.post(f"{sim.url}/_sim/webhooks", json=body, timeout=T).status_code == 200


def seed_person(api: Api, key: str = "42") -> None:
    api.create(key)
    api.attrs(key, {"com.apsis1.attributes.email": "jo@example.com", "com.apsis1.attributes.mobile": "+3247000001"})
    api.consent(key, NEWSLETTER, "opt-in")
    api.consent(key, EVENTS, "opt-in")
    api.consent(key, SMS_OFFERS, "opt-in", channel=SMS)


def test_unsubscribe_opts_out_and_calls_the_webhook(sim: ApsisSimulator, api: Api, receiver: Receiver) -> None:
    configure(sim, receiver)
    seed_person(api)
    reply = requests.post(
        f"{sim.url}/_sim/unsubscribe", json={"profile_key": "42", "topic": NEWSLETTER, "channel": "email"}, timeout=T
    )
    assert reply.status_code == 200 and reply.json()["webhook"] == "queued"
    assert sim.flush_webhooks(T)

    [call] = receiver.calls
    assert call["path"] == "/integrations/demo/apsis/optout"
    assert call["headers"]["X-Apsis-Webhook-Token"] == "fake-optout-token"
    assert call["headers"]["Content-Type"] == "application/json"
    body = call["body"]
    assert set(body) == {
        "event",
        "profile_key",
        "email",
        "mobile",
        "topic_discriminator",
        "channel_discriminator",
        "occurred_at",
    }
    assert body["event"] == "email.unsubscribe"
    assert (body["profile_key"], body["email"], body["mobile"]) == ("42", "jo@example.com", "+3247000001")
    assert (body["topic_discriminator"], body["channel_discriminator"]) == (NEWSLETTER, EMAIL)
    assert body["occurred_at"].endswith("Z")
    types = {(c["topic"], c["type"]) for c in sim.get_profile(CRM, "42")["consents"]}
    assert types == {(NEWSLETTER, "opt-out"), (EVENTS, "opt-in"), (SMS_OFFERS, "opt-in")}
    [delivery] = sim.deliveries()
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)
    assert "fake-optout-token" not in json.dumps(requests.get(f"{sim.url}/_sim/webhooks/deliveries", timeout=T).json())


def test_the_webhook_node_can_send_a_form_or_get_parameters_with_the_token_in_the_url(
    sim: ApsisSimulator, api: Api, receiver: Receiver
) -> None:
    seed_person(api)
    expected = {
        "event": "email.unsubscribe",
        "profile_key": "42",
        "email": "jo@example.com",
        "mobile": "+3247000001",
        "topic_discriminator": NEWSLETTER,
        "channel_discriminator": EMAIL,
    }
    for method, body_format in (("POST", "form"), ("GET", "query")):
        body = {"url": receiver.url + "?token=fake-optout-token", "method": method, "body_format": body_format}
        reply = requests.post(f"{sim.url}/_sim/webhooks", json=body, timeout=T)
        assert reply.status_code == 200 and "fake-optout-token" not in reply.text
        sim.unsubscribe("42", NEWSLETTER)
        assert sim.flush_webhooks(T)
    form, get = receiver.calls
    assert form["method"] == "POST" and form["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(form["path"]).query) == {"token": ["fake-optout-token"]}
    fields = dict(urllib.parse.parse_qsl(form["raw"].decode()))
    assert {k: v for k, v in fields.items() if k != "occurred_at"} == expected and fields["occurred_at"].endswith("Z")
    assert get["method"] == "GET" and get["raw"] == b""
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(get["path"]).query))
    assert params.pop("token") == "fake-optout-token" and params.pop("occurred_at").endswith("Z")
    assert params == expected
    assert "fake-optout-token" not in json.dumps(requests.get(f"{sim.url}/_sim/webhooks/deliveries", timeout=T).json())
    bad = requests.post(f"{sim.url}/_sim/webhooks", json={"url": receiver.url, "body_format": "xml"}, timeout=T)
    problem(bad, 400)


def test_abuse_opts_out_every_email_topic_with_one_call(sim: ApsisSimulator, api: Api, receiver: Receiver) -> None:
    configure(sim, receiver)
    seed_person(api)
    sim.unsubscribe("42", None, kind="abuse")
    sim.unsubscribe("42", SMS_OFFERS, channel="sms")
    assert sim.flush_webhooks(T)
    events = sorted((c["body"]["event"], c["body"]["topic_discriminator"]) for c in receiver.calls)
    assert events == [("email.abuse", None), ("sms.unsubscribe", SMS_OFFERS)]
    assert {c["type"] for c in sim.get_profile(CRM, "42")["consents"]} == {"opt-out"}
    bad = requests.post(f"{sim.url}/_sim/unsubscribe", json={"profile_key": "42", "topic": "nope"}, timeout=T)
    problem(bad, 400)
    missing = requests.post(f"{sim.url}/_sim/unsubscribe", json={"profile_key": "9", "topic": NEWSLETTER}, timeout=T)
    problem(missing, 404)


def test_webhook_retries_5xx_and_429_then_delivers(sim: ApsisSimulator, api: Api, receiver: Receiver) -> None:
    configure(sim, receiver)
    seed_person(api)
    receiver.statuses = [500, 429, 503]
    sim.unsubscribe("42", NEWSLETTER)
    assert sim.flush_webhooks(T)
    [delivery] = sim.deliveries()
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", 4, 200)
    assert len(receiver.calls) == 4


def test_webhook_dead_letters_after_five_failures(sim: ApsisSimulator, api: Api, receiver: Receiver) -> None:
    configure(sim, receiver)
    seed_person(api)
    receiver.statuses = [500] * 10
    sim.unsubscribe("42", NEWSLETTER)
    assert sim.flush_webhooks(T)
    [delivery] = requests.get(f"{sim.url}/_sim/webhooks/deliveries", timeout=T).json()["deliveries"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("dead_letter", 5, 500)


def test_api_opt_outs_do_not_fire_the_webhook(sim: ApsisSimulator, api: Api, receiver: Receiver) -> None:
    configure(sim, receiver)
    seed_person(api)
    assert api.consent("42", NEWSLETTER, "opt-out").status_code == 204
    assert sim.flush_webhooks(T)
    assert sim.deliveries() == [] and receiver.calls == []


def test_reset_clears_data_but_keeps_configuration(sim: ApsisSimulator, api: Api, receiver: Receiver) -> None:
    configure(sim, receiver)
    seed_person(api)
    assert requests.post(f"{sim.url}/_sim/reset", timeout=T).status_code == 200
    assert sim.profiles() == [] and sim.calls() == {}
    seed_person(api)  # the token is still valid
    sim.unsubscribe("42", NEWSLETTER)
    assert sim.flush_webhooks(T) and len(receiver.calls) == 1


def test_injected_faults_and_call_counts(sim: ApsisSimulator, api: Api) -> None:
    fault = {"path_regex": "/audience/sections$", "status": 503, "count": 1}
    assert requests.post(f"{sim.url}/_sim/faults", json=fault, timeout=T).status_code == 200
    assert api("GET", "/audience/sections").status_code == 503
    assert api("GET", "/audience/sections").status_code == 200
    assert requests.get(f"{sim.url}/_sim/calls", timeout=T).json() == {
        "POST /oauth/token": 1,
        "GET /audience/sections": 2,
    }
