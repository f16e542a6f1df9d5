"""ApsisClient against the APSIS One simulator over real HTTP: tokens, typed errors, retries, bulk import."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import DEFAULT_PROFILE_TAGS_PATH, ApsisClient, _redact
from efficy_sync.clients.errors import (
    ApsisUnavailable,
    AuthError,
    MappingGone,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RejectedValue,
    RequestRefused,
    acknowledgeable,
)
from efficy_sync.clients.http import RetryPolicy
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.support import ManualClock

SECTION = "com.apsis1.sections.default"
CRM = "com.apsis1.keyspaces.crm-id"
NEWSLETTER = "usercreated.topics.newsletter-ab12"
SMS_OFFERS = "usercreated.topics.sms-offers-cd34"
EVENTS = "usercreated.topics.events-ef56"
FIRSTNAME = "com.apsis1.attributes.firstname"
EMAIL = "com.apsis1.attributes.email"
PATCH_V2 = "PATCH /v2/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/attributes"
TOKEN = "POST /oauth/token"
FAST = RetryPolicy(total=5, backoff_factor=0.01, backoff_jitter=0.01, connect_timeout=2, read_timeout=5)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., ApsisSimulator]]:
    started: list[ApsisSimulator] = []

    def make(**kwargs: Any) -> ApsisSimulator:
        sim = ApsisSimulator(**{"import_delay_ms": 10, **kwargs}).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., ApsisSimulator]) -> ApsisSimulator:
    return make_sim()


def client_for(sim: ApsisSimulator, **kwargs: Any) -> ApsisClient:
    options: dict[str, Any] = {"section": SECTION, "policy": FAST, **kwargs}
    return ApsisClient(sim.url, sim.client_id, sim.client_secret, **options)


@pytest.fixture
def client(sim: ApsisSimulator) -> ApsisClient:
    return client_for(sim)


# ---- authentication -----------------------------------------------------------------------------------------
def test_one_token_serves_many_calls(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.list_sections()
    for key in range(5):
        client.upsert_attributes(str(key), {FIRSTNAME: f"P{key}"})
    assert sim.calls()[TOKEN] == 1
    assert client.calls["token"] == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_refreshed_once(make_sim: Callable[..., ApsisSimulator], status: int) -> None:
    sim = make_sim(expired_token_status=status)
    client = client_for(sim)
    client.list_keyspaces()
    sim.revoke_tokens()
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 2
    assert sim.calls()["GET /audience/sections"] == 2  # the refused call and its replay


def test_a_token_is_renewed_before_it_expires(make_sim: Callable[..., ApsisSimulator]) -> None:
    clock = ManualClock()  # one clock for both sides, moved instead of slept
    sim = make_sim(token_ttl=2, clock=clock)
    client = client_for(sim, clock=clock)  # the default 1 h margin is capped at half a token's life
    client.list_sections()
    clock.advance(0.9)
    client.list_sections()
    assert sim.calls()[TOKEN] == 1  # still within half its life: reused
    clock.advance(0.2)
    client.list_sections()
    assert sim.calls()[TOKEN] == 2
    assert sim.calls()["GET /audience/sections"] == 3  # renewed up front: no refused call


def test_auth_errors_when_refresh_does_not_help(sim: ApsisSimulator) -> None:
    sim.add_fault(path_regex="^/audience/sections$", status=401, count=2)
    with pytest.raises(AuthError) as caught:
        client_for(sim).list_sections()
    assert caught.value.status == 401
    assert sim.calls()[TOKEN] == 2
    with pytest.raises(AuthError):
        ApsisClient(sim.url, sim.client_id, "wrong-fake-secret", section=SECTION, policy=FAST).list_sections()


def test_token_endpoint_429_is_backed_off(sim: ApsisSimulator, client: ApsisClient) -> None:
    sim.add_fault(path_regex="^/oauth/token$", status=429, count=2, headers={"Retry-After": "0"})
    assert client.list_tags()
    assert sim.calls()[TOKEN] == 3
    assert client.calls["token"] == 1


@pytest.mark.parametrize("retry_after", ["0.05", "0.1 seconds", "1s", "soon", "", "-1"])
def test_a_retry_after_that_is_not_a_whole_number_is_still_backed_off(
    sim: ApsisSimulator, client: ApsisClient, retry_after: str
) -> None:
    """urllib3 reads only whole seconds or a date: anything else raised InvalidHeader and the call failed at
    once without a retry. Decimal seconds are waited as said; an unreadable value takes our own backoff."""
    client.list_keyspaces()
    sim.add_fault(path_regex="/tags$", status=429, count=2, headers={"Retry-After": retry_after})
    assert client.list_tags()
    assert sum(n for call, n in sim.calls().items() if call.startswith("GET ") and call.endswith("/tags")) == 3


HTML_PAGE = "<html><body>Service maintenance</body></html>"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (HTML_PAGE, "text/html"),  # a proxy's or maintenance page, answered 200
        ('{"token_type": "Bearer"}', "application/json"),  # no access_token
        ('{"access_token": ""}', "application/json"),
        ('["a", "list"]', "application/json"),
    ],
)
def test_a_token_answer_without_a_token_is_an_outage_then_recovers(
    sim: ApsisSimulator, client: ApsisClient, body: str, content_type: str
) -> None:
    """It was an untyped KeyError/ValueError: Step Functions' retry did not match it and a full sync's page failed
    for good. Typed as an outage it is retried (and never acknowledges a person's change)."""
    sim.add_fault(path_regex="^/oauth/token$", status=200, body=body, content_type=content_type, count=1)
    with pytest.raises(ApsisUnavailable) as caught:
        client.list_sections()
    assert not acknowledgeable(caught.value)
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]  # the next call asks again


@pytest.mark.parametrize("expires_in", ['"3600s"', '"soon"', "-5", "null"])
def test_an_odd_expires_in_on_an_opaque_token_does_not_fail_the_call(
    sim: ApsisSimulator, client: ApsisClient, expires_in: str
) -> None:
    """expires_in is deprecated and its format is not ours to rely on: an opaque token with an unreadable one
    is used (refused here by the simulator, so refreshed once) instead of failing the call."""
    answer = f'{{"access_token": "opaque-fake-token", "expires_in": {expires_in}}}'
    sim.add_fault(path_regex="^/oauth/token$", status=200, body=answer, content_type="application/json", count=1)
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 2  # the opaque token, refused once, then a real one


@pytest.mark.parametrize(
    ("path", "call"),
    [
        (r"/consents$", lambda c: c.get_consents("7")),
        (r"^/audience/sections$", lambda c: c.list_sections()),
        (r"/imports/", lambda c: c.get_import("imp-1")),
    ],
)
@pytest.mark.parametrize(
    ("body", "content_type"),
    [(HTML_PAGE, "text/html"), ('["x"]', "application/json"), ('{"items": "none"}', "application/json")],
)
def test_a_200_we_cannot_read_is_an_outage_not_an_empty_answer(
    sim: ApsisSimulator,
    client: ApsisClient,
    path: str,
    call: Callable[[ApsisClient], Any],
    body: str,
    content_type: str,
) -> None:
    """An unreadable list must not read as "no consents" / "no sections" (the 409 check would then call a held
    consent refused), nor crash untyped: it is the integration's outage, retried."""
    if "imports" in path and "items" in body:
        body = '{"result": "done"}'
    client.list_keyspaces()  # the token first, so the fault meets the call itself
    sim.add_fault(path_regex=path, status=200, body=body, content_type=content_type, count=1)
    with pytest.raises(ApsisUnavailable):
        call(client)


def test_an_odd_expires_in_takes_the_fallback_lifetime() -> None:
    from efficy_sync.clients.apsis_transport import FALLBACK_TOKEN_LIFETIME, _lifetime

    assert _lifetime("3600s") == 3600
    assert _lifetime(" 86400 ") == 86400
    assert _lifetime(7200.0) == 7200
    for odd in (None, "", "soon", -5, 0, "nan", "inf", "1e999"):
        assert _lifetime(odd) == FALLBACK_TOKEN_LIFETIME


# ---- definitions, profiles, attributes, tags ---------------------------------------------------------------
def test_definitions(client: ApsisClient) -> None:
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
    assert CRM in {k["discriminator"] for k in client.list_keyspaces()}
    assert {t["discriminator"] for t in client.list_topics()} == {NEWSLETTER, SMS_OFFERS, EVENTS}
    assert {t["discriminator"] for t in client.list_tags()} == {"newsletter-readers", "vip", "sms-club"}
    versions = client.live_attribute_versions()
    assert len(client.list_attributes()) == len(versions) == 7
    assert versions[FIRSTNAME] == "6a0e1f52-0003-4a1a-9e01-000000000003"


def test_known_versions_and_a_valid_token_are_read_without_waiting_on_a_refresh(
    sim: ApsisSimulator, client: ApsisClient
) -> None:
    """A page's 16 threads ask for the versions before every attribute PATCH, and for the token before every
    call: once known, each is read without the lock a refresh holds while it asks APSIS again."""
    import threading

    client.create_with_attributes("1", {FIRSTNAME: "Jo"})  # lists the versions once
    got: list[dict[str, str]] = []
    with client._versions_lock:  # a refresh in progress on another thread
        reader = threading.Thread(target=lambda: got.append(client._attribute_versions(refresh=False)))
        reader.start()
        reader.join(timeout=5)
        assert not reader.is_alive(), "a cached read waited on the refresh's lock"
    assert got[0][FIRSTNAME] == "6a0e1f52-0003-4a1a-9e01-000000000003"
    token = client._access_token()  # valid: every call reads it without waiting on a fetch in progress
    with client._token_lock:
        reader = threading.Thread(target=lambda: got.append({"token": client._access_token()}))
        reader.start()
        reader.join(timeout=5)
        assert not reader.is_alive(), "a valid token's read waited on the token lock"
    assert got[1] == {"token": token}


def test_profile_create_patch_upsert_delete(sim: ApsisSimulator, client: ApsisClient) -> None:
    assert client.create_profile("1") is True
    assert client.create_profile("1") is False
    client.patch_attributes("1", {FIRSTNAME: "Jo", EMAIL: "jo@example.com"})
    client.patch_attributes("1", {EMAIL: None})
    assert sim.get_profile(CRM, "1")["attributes"] == {"com.apsis1.attributes.crmid": "1", FIRSTNAME: "Jo"}
    with pytest.raises(NotFound):
        client.patch_attributes("2", {FIRSTNAME: "Ann"})
    assert client.upsert_attributes("2", {FIRSTNAME: "Ann"}) is True
    assert client.upsert_attributes("2", {FIRSTNAME: "Anna"}) is False
    assert sim.get_profile(CRM, "2")["attributes"][FIRSTNAME] == "Anna"
    assert client.delete_profile("2") is True
    assert client.delete_profile("2") is False
    assert sim.get_profile(CRM, "2") is None


def test_rejected_and_too_large_values_are_typed(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.create_profile("1")
    with pytest.raises(RejectedValue) as caught:
        client.patch_attributes("1", {FIRSTNAME: {"not": "a scalar"}})  # this person's value
    assert caught.value.status == 400 and not caught.value.retryable and caught.value.about_person
    with pytest.raises(PayloadTooLarge):
        client.patch_attributes("1", {FIRSTNAME: "x" * 110_000})  # refused before sending
    sim.max_body_bytes = 1000
    with pytest.raises(PayloadTooLarge) as caught:
        client.patch_attributes("1", {FIRSTNAME: "x" * 2000})  # refused by the server
    assert caught.value.status == 413


def test_a_mapped_attribute_deleted_in_apsis_is_the_integration_s_failure(sim: ApsisSimulator) -> None:
    """Every person's write would be refused alike: MappingGone (never recorded on a person nor acknowledged),
    on the evidence of the section's attribute list, for the v2 PATCH and for the one-call v1 create."""
    client = client_for(sim)
    client.create_profile("1")
    client.create_with_attributes("2", {FIRSTNAME: "Jo"})  # lists the versions once
    definitions = sim.definitions()
    for section in definitions["sections"]:
        section["attributes"] = [a for a in section["attributes"] if a["discriminator"] != FIRSTNAME]
    sim.set_definitions(definitions)

    with pytest.raises(MappingGone) as caught:
        client.patch_attributes("1", {FIRSTNAME: "Ann"})
    assert not caught.value.about_person and not acknowledgeable(caught.value)
    assert FIRSTNAME in str(caught.value)
    with pytest.raises(MappingGone):
        client.create_with_attributes("3", {FIRSTNAME: "Bo"})
    assert sim.get_profile(CRM, "3") is None


def test_a_definitions_list_we_cannot_read_is_no_evidence(sim: ApsisSimulator) -> None:
    """The refusal stays the person's when the list fails or names nothing we can read."""
    client = client_for(sim)
    client.create_profile("1")
    client.list_attributes = lambda: [{"name": "no discriminator here"}]  # type: ignore[method-assign]
    with pytest.raises(RejectedValue):
        client.patch_attributes("1", {"usercreated.attributes.unknown": "x"})

    def failing() -> list[dict[str, Any]]:
        raise RuntimeError("the list failed")

    client.list_attributes = failing  # type: ignore[method-assign]
    with pytest.raises(RejectedValue):
        client.patch_attributes("1", {"usercreated.attributes.unknown": "x"})


def test_tags(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.create_profile("1")
    client.patch_tags("1", {"vip": True, "newsletter-readers": True})
    client.patch_tags("1", {"newsletter-readers": False})
    assert sim.get_profile(CRM, "1")["tags"] == ["vip"]
    with pytest.raises(RejectedValue):
        client.patch_tags("1", {"vip": "yes"})  # a value the tag call refuses: about this call, typed
    with pytest.raises(MappingGone):
        client.patch_tags("1", {"gold": True})  # the section has no such tag (its tag list says so)


def test_the_assumed_tags_path_is_a_setting(sim: ApsisSimulator) -> None:
    from efficy_sync.clients.errors import NotFound
    from efficy_sync.config import ApsisSettings

    default = ApsisSettings.model_fields["profile_tags_path"].default
    assert default == DEFAULT_PROFILE_TAGS_PATH  # the config's default is the client's (config.py stays light)
    client_for(sim, profile_tags_path=default).create_profile("1")
    client_for(sim, profile_tags_path=default).patch_tags("1", {"vip": True})
    assert sim.get_profile(CRM, "1")["tags"] == ["vip"]
    elsewhere = client_for(sim, profile_tags_path="/v3/profiles/{key}/tag-set")
    with pytest.raises(NotFound):  # the simulator only knows the assumed path: the configured one was called
        elsewhere.patch_tags("1", {"vip": False})
    assert sim.get_profile(CRM, "1")["tags"] == ["vip"]


# ---- consents ---------------------------------------------------------------------------------------------
def test_consent_outcomes(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.create_profile("1")
    assert client.set_consent("1", NEWSLETTER, "email", "opt-in") == "created"
    assert client.set_consent("1", NEWSLETTER, "email", "opt-in") == "unchanged"
    assert client.set_consent("1", NEWSLETTER, "email", "opt-out") == "updated"
    assert client.set_consent("1", SMS_OFFERS, "sms", "opt-in") == "created"
    items = client.get_consents("1")
    assert {(i["topic_discriminator"], i["type"], i["source"], i["reason"]) for i in items} == {
        (NEWSLETTER, "opt-out", "Efficy", "efficy-sync"),
        (SMS_OFFERS, "opt-in", "Efficy", "efficy-sync"),
    }
    assert [i["topic_discriminator"] for i in client.get_consents("1", ["opt-in"])] == [SMS_OFFERS]
    with pytest.raises(MappingGone):  # the section's topic list has no such subscription
        client.set_consent("1", "usercreated.topics.nope", "email", "opt-in")
    with pytest.raises(RejectedValue):  # a channel the topic does not offer: refused, the topic still exists
        client.set_consent("1", NEWSLETTER, "sms", "opt-in")
    with pytest.raises(NotFound):
        client.set_consent("2", NEWSLETTER, "email", "opt-in")
    with pytest.raises(ValueError):
        client.set_consent("1", NEWSLETTER, "fax", "opt-in")


def test_consent_noop_answered_200_is_unchanged(make_sim: Callable[..., ApsisSimulator]) -> None:
    client = client_for(make_sim(consent_noop_status=200))
    client.create_profile("1")
    assert client.set_consent("1", EVENTS, "email", "opt-in") == "created"
    assert client.set_consent("1", EVENTS, "email", "opt-in") == "unchanged"


def test_consent_on_a_keyspace_without_subscriptions_is_an_auth_error(sim: ApsisSimulator) -> None:
    definitions = sim.definitions()
    definitions["keyspaces"].append({"discriminator": "com.apsis1.keyspaces.export", "manage_subscriptions": False})
    sim.set_definitions(definitions)
    client = client_for(sim, keyspace="com.apsis1.keyspaces.export")
    client.create_profile("1")
    with pytest.raises(AuthError):
        client.set_consent("1", NEWSLETTER, "email", "opt-in")


def test_api_opt_out_does_not_fire_the_automation_webhook(sim: ApsisSimulator, client: ApsisClient) -> None:
    sim.configure_webhook("http://127.0.0.1:9/unused", {"X-Apsis-Webhook-Token": "fake-token"})
    client.create_profile("1")
    client.set_consent("1", NEWSLETTER, "email", "opt-in")
    assert client.set_consent("1", NEWSLETTER, "email", "opt-out") == "updated"
    assert sim.flush_webhooks(2)
    assert sim.deliveries() == []
    sim.unsubscribe("1", EVENTS)  # the same simulator does fire it for a person's own unsubscribe
    assert len(sim.deliveries()) == 1


# ---- throttling and outages -------------------------------------------------------------------------------
@pytest.mark.parametrize("retry_after", [True, False])
def test_burst_on_one_profile_key_ends_correct(make_sim: Callable[..., ApsisSimulator], retry_after: bool) -> None:
    sim = make_sim(retry_after=retry_after)
    # Three calls a second on one key (APSIS allows ten): the 16 calls outrun the bucket unless they take over 4 s.
    # At ten a second they had to come faster than 0.6 s in all, and a loaded machine's did not: no 429 at all.
    # The backoff (0.2 s, then doubling) refills a token by the third retry when the 429 carries no Retry-After.
    sim.profile_key_rate = 3.0
    client = client_for(sim, policy=dataclasses.replace(FAST, backoff_factor=0.1))
    client.create_profile("1")
    for i in range(15):
        client.patch_attributes("1", {FIRSTNAME: f"v{i}"})
    assert sim.get_profile(CRM, "1")["attributes"][FIRSTNAME] == "v14"
    assert client.calls["patch_attributes"] == 15
    assert sim.calls()[PATCH_V2] > 15, "the burst should have been throttled and retried"


def test_flaky_503s_still_end_correct(sim: ApsisSimulator) -> None:
    client = client_for(sim, policy=RetryPolicy(total=8, backoff_factor=0.01, backoff_jitter=0.01))
    sim.add_fault(path_regex="^/(v2/)?audience/", status=503, rate=0.3, body='{"title":"Service unavailable"}')
    for key in range(8):
        client.upsert_attributes(str(key), {FIRSTNAME: f"P{key}"})
        client.set_consent(str(key), NEWSLETTER, "email", "opt-in")
        client.patch_tags(str(key), {"vip": key % 2 == 0})
    for key in range(8):
        profile = sim.get_profile(CRM, str(key))
        assert profile["attributes"][FIRSTNAME] == f"P{key}"
        assert [(c["topic"], c["type"]) for c in profile["consents"]] == [(NEWSLETTER, "opt-in")]
        assert profile["tags"] == (["vip"] if key % 2 == 0 else [])
    assert sum(sim.calls().values()) > sum(client.calls.values()), "some calls should have been retried"


def test_persistent_429_and_503_become_transient_errors(sim: ApsisSimulator) -> None:
    client = client_for(sim, policy=RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.01))
    sim.add_fault(path_regex="^/audience/keyspaces$", status=429, headers={"Retry-After": "0"})
    with pytest.raises(RateLimited) as limited:
        client.list_keyspaces()
    assert limited.value.retryable
    sim.add_fault(path_regex="^/audience/sections$", status=503)
    with pytest.raises(ApsisUnavailable) as unavailable:
        client.list_sections()
    assert unavailable.value.retryable and unavailable.value.status == 503


def test_unreachable_server_is_unavailable() -> None:
    client = ApsisClient(
        "http://127.0.0.1:9", "id", "fake-secret", section=SECTION, policy=RetryPolicy(total=1, backoff_factor=0.01)
    )
    with pytest.raises(ApsisUnavailable):
        client.list_sections()


# ---- bulk import ------------------------------------------------------------------------------------------
def test_bulk_import_end_to_end(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.create_profile("1")
    client.set_consent("1", NEWSLETTER, "email", "opt-out")
    versions = client.live_attribute_versions()
    spec = {
        "keyspace_mapping": {"keyspace_discriminator": CRM, "field_selector": "crm_id"},
        "options": {"update_existing_profiles": True, "clear_existing_attributes": False},
        "attribute_mappings": [
            {"field_selector": "first", "attribute_version_id": versions[FIRSTNAME]},
            {"field_selector": "email", "attribute_version_id": versions[EMAIL]},
        ],
        "consent_mappings": [
            {
                "address_field_selector": "email",
                "consents": [
                    {
                        "field_selector": NEWSLETTER,  # APSIS's layout: the column is headed by the topic
                        "channel_discriminator": "com.apsis1.channels.email",
                        "topic_discriminator": NEWSLETTER,
                        "type": "opt-in",
                        "resubscribe_if_opted_out": False,
                    }
                ],
            }
        ],
        "tag_mappings": [{"field_selector": "vip", "tag_discriminator": "vip"}],
    }
    rows = [f"crm_id,first,email,{NEWSLETTER},vip"] + [f"{k},P{k},p{k}@example.com,1,{k % 2 == 0}" for k in range(1, 6)]
    report = client.run_import(spec, ("\n".join(rows) + "\n").encode(), poll_interval=0.02, timeout=5)

    assert report["status"] == "completed"
    assert (report["rows"], report["created"], report["updated"], report["failed"]) == (5, 4, 1, 0)
    for key in range(1, 6):
        profile = sim.get_profile(CRM, str(key))
        assert profile["attributes"][EMAIL] == f"p{key}@example.com"
        assert profile["tags"] == (["vip"] if key % 2 == 0 else [])
        expected = "opt-out" if key == 1 else "opt-in"  # an earlier opt-out is not overturned by an import
        assert [c["type"] for c in profile["consents"]] == [expected]
    assert client.calls["create_import"] == client.calls["upload_import"] == 1
    assert sim.calls()["POST /_upload/{import_id}"] == 1


def test_a_rejected_import_file_raises(client: ApsisClient) -> None:
    spec = {"keyspace_mapping": {"keyspace_discriminator": CRM, "field_selector": "crm_id"}}
    with pytest.raises(RejectedValue, match="columns missing"):
        client.run_import(spec, b"id\n1\n", poll_interval=0.02, timeout=5)
    with pytest.raises(RejectedValue):
        client.create_import({"keyspace_mapping": {}})


def test_a_403_from_the_pre_signed_upload_url_is_retried_not_a_credentials_failure(
    sim: ApsisSimulator, client: ApsisClient
) -> None:
    """The upload goes to a pre-signed URL (S3), not to APSIS with our token: its 403 says the URL's signature
    expired or its policy refused the file. Read as AuthError (credentials, never retried) it failed the whole
    full sync; a new import (a new URL) fixes it, so it is retryable."""
    spec = {"keyspace_mapping": {"keyspace_discriminator": CRM, "field_selector": "crm_id"}}
    sim.add_fault(path_regex="^/_upload/", method="POST", status=403, count=1)
    with pytest.raises(ApsisUnavailable, match="pre-signed"):
        client.run_import(spec, b"crm_id\n1\n", poll_interval=0.02, timeout=5)
    assert client.run_import(spec, b"crm_id\n1\n", poll_interval=0.02, timeout=5)["status"] == "completed"


def test_an_import_that_does_not_finish_in_time(make_sim: Callable[..., ApsisSimulator]) -> None:
    client = client_for(make_sim(import_delay_ms=5000))
    spec = {"keyspace_mapping": {"keyspace_discriminator": CRM, "field_selector": "crm_id"}}
    with pytest.raises(ApsisUnavailable, match="still queued"):
        client.run_import(spec, b"crm_id\n1\n", poll_interval=0.02, timeout=0.2)


@pytest.mark.parametrize("answer", ['{"id": "imp-1"}', '{"result": {"report": {}}}', '{"result": {"status": ""}}'])
def test_an_import_status_we_cannot_read_fails_at_once(sim: ApsisSimulator, client: ApsisClient, answer: str) -> None:
    """Read as "no status yet", such an answer was polled until the import's timeout (up to the page's time)."""
    client.list_keyspaces()
    sim.add_fault(path_regex="/imports/", status=200, body=answer, content_type="application/json", count=1)
    with pytest.raises(ApsisUnavailable, match=r"no status|not an object"):
        client.get_import("imp-1")


def test_an_import_status_at_the_top_level_is_read(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.list_keyspaces()
    body = '{"status": "completed", "report": {"rows": 1}}'
    sim.add_fault(path_regex="/imports/", status=200, body=body, content_type="application/json", count=1)
    assert client.get_import("imp-1") == {"status": "completed", "report": {"rows": 1}}


def test_personal_data_is_masked_in_error_text() -> None:
    text = _redact("value jo.doe+x@example.com or +32 470 00 00 01 refused on 2024-05-01")
    assert "example.com" not in text and "470" not in text and "2024-05-01" in text


def test_a_403_gets_a_new_token_at_most_once_a_minute(make_sim: Callable[..., ApsisSimulator]) -> None:
    """APSIS answers 403 for a token it no longer takes and for an API client not allowed an endpoint. Refreshing
    on each 403 of the second kind cost a token request per call, and the token endpoint allows 10 a minute."""
    clock = ManualClock()
    sim = make_sim()
    sim.add_fault(path_regex="^/audience/sections$", status=403, count=20)
    client = client_for(sim, clock=clock)
    for _ in range(5):  # an API client without permission for the endpoint: every call refused
        with pytest.raises(AuthError):
            client.list_sections()
    assert sim.calls()[TOKEN] == 2  # the first token, and one refresh in case it was the token
    assert client.list_keyspaces()  # the token itself is good
    clock.advance(61)
    with pytest.raises(AuthError):
        client.list_sections()
    assert sim.calls()[TOKEN] == 3  # a minute later, a 403 may mean a revoked token again


@pytest.mark.parametrize("body", ['["not", "a", "problem"]', '"just text"', "42"])
def test_an_error_body_that_is_json_but_not_a_problem_object_is_still_a_typed_error(
    sim: ApsisSimulator, client: ApsisClient, body: str
) -> None:
    """An error body that is JSON but no problem+json object (contracts/apsis-one.md §5: APSIS's own are) is
    read without failing, and typed by its status; a 400 of that kind is no evidence that APSIS refused the
    person's value (a gateway answered it), so it is about our request, never acknowledged as the person's."""
    client.create_profile("1")
    sim.add_fault(path_regex="/attributes$", status=400, count=1, body=body, content_type="application/json")
    with pytest.raises(RequestRefused) as raised:
        client.patch_attributes("1", {FIRSTNAME: "Jo"})
    assert raised.value.status == 400 and not raised.value.about_person
