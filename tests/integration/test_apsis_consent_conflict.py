"""A 409 to a consent POST is "no change" only when APSIS One already holds that consent.

APSIS answers 409 to any transition it does not support (contracts/apsis-one.md §3: "409 unsupported transition,
e.g. same type again"): an opt-out refused while a double opt-in is pending must not be recorded as sent. An
opt-out refused while the profile holds an opt-in, a transition APSIS supports, is no verdict on the person: it
is retried, not acknowledged. The real ApsisClient and PersonSyncer against the APSIS One simulator over HTTP;
the 409 (and a pending double opt-in, which the simulator does not model, in the read-back) are injected the way
the real API would answer them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient, ConsentConflict
from efficy_sync.clients.errors import ConsentRefused, acknowledgeable
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
SLOT = f"{NEWS}|email"
CRM = "com.apsis1.keyspaces.crm-id"
SECTION = "com.apsis1.sections.default"
UNSUPPORTED = '{"title":"Conflict","status":409,"detail":"Transition from pending-opt-in to opt-out is not supported"}'
CFG = config_from_dict(
    {
        "integration_id": "conflicts",
        "efficy": {"base_url": "https://crm.example.com/crm", "api_key_secret": "x/e", "webhook_secret_secret": "x/w"},
        "apsis": {
            "base_url": "https://api.example.com",
            "section": SECTION,
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
    }
)


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="c", client_secret="c-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: ApsisSimulator) -> ApsisClient:
    return ApsisClient(sim.url, "c", "c-secret", section=SECTION, policy=FAST)


def refuse_next_consent(sim: ApsisSimulator) -> None:
    sim.add_fault(
        path_regex="/consents$",
        method="POST",
        status=409,
        count=1,
        body=UNSUPPORTED,
        content_type="application/problem+json",
    )


def read_back_pending(sim: ApsisSimulator) -> None:
    """The profile's consents, read back after the 409, show the double opt-in still pending."""
    item = {"topic_discriminator": NEWS, "channel_discriminator": "com.apsis1.channels.email", "type": "pending-opt-in"}
    sim.add_fault(
        path_regex="/consents$",
        method="GET",
        status=200,
        count=1,
        body=json.dumps({"items": [item]}),
        content_type="application/json",
    )


def consent_types(sim: ApsisSimulator, key: str) -> set[str]:
    profile = sim.get_profile(CRM, key)
    return {c["type"] for c in profile["consents"] if c["topic"] == NEWS} if profile else set()


def person(key: int, profiles: list[int], stamp: str) -> dict[str, Any]:
    return {"K_CONTACT": key, "EMAIL1": f"c{key}@example.com", "D_CHANGE": stamp, "profiles": profiles}


def test_a_409_for_an_unsupported_transition_is_refused_not_unchanged(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.create_profile("1")
    assert client.set_consent("1", NEWS, "email", "opt-in") == "created"
    refuse_next_consent(sim)
    read_back_pending(sim)
    with pytest.raises(ConsentRefused) as raised:
        client.set_consent("1", NEWS, "email", "opt-out")
    assert raised.value.category == "consent_refused" and raised.value.status == 409
    assert acknowledgeable(raised.value)  # about this person: recorded on them, not a stuck queue
    assert "holds pending-opt-in" in str(raised.value)
    assert sim.calls().get("GET /v2/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/consents") == 1


def test_a_409_while_the_same_consent_is_held_is_unchanged(sim: ApsisSimulator, client: ApsisClient) -> None:
    client.create_profile("1")
    assert client.set_consent("1", NEWS, "email", "opt-out") == "created"
    refuse_next_consent(sim)  # whatever the text says: the profile's consents are the evidence
    assert client.set_consent("1", NEWS, "email", "opt-out") == "unchanged"
    assert client.set_consent("1", NEWS, "email", "opt-out") == "unchanged"  # the simulator's own 409


def test_a_refused_opt_out_is_not_recorded_as_sent_and_the_next_sync_sends_it(
    sim: ApsisSimulator, client: ApsisClient
) -> None:
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, client, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7, [12], "2024-05-01T10:00:00"), None).result == "synced"
    assert consent_types(sim, "7") == {"opt-in"}

    refuse_next_consent(sim)
    read_back_pending(sim)
    left = person(7, [], "2024-05-02T10:00:00")  # the CRM user takes the person out of the profile
    outcome = syncer.sync(7, left, store.get("conflicts", 7))
    assert outcome.result == "failed"
    stored = store.get("conflicts", 7)
    assert stored is not None and stored.error_category == "consent_refused"
    assert consent_types(sim, "7") == {"opt-in"}

    again = syncer.sync(7, left, store.get("conflicts", 7))  # the next sync (a retry, a full sync)
    assert again.result != "failed"
    assert consent_types(sim, "7") == {"opt-out"}


def test_a_409_to_an_opt_out_while_the_profile_holds_an_opt_in_is_retried_not_acknowledged(
    sim: ApsisSimulator, client: ApsisClient
) -> None:
    """Acknowledged as the person's failure, the CRM opt-out waited for the person's next change or full sync."""
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, client, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7, [12], "2024-05-01T10:00:00"), None).result == "synced"
    refuse_next_consent(sim)  # e.g. a concurrent change: the profile, read back, still holds the opt-in
    left = person(7, [], "2024-05-02T10:00:00")
    with pytest.raises(ConsentConflict) as raised:
        syncer.sync(7, left, store.get("conflicts", 7))
    assert not acknowledgeable(raised.value) and raised.value.retryable  # the queue retries it, then the DLQ
    assert store.get("conflicts", 7).consents[SLOT] != "opt-out"  # never recorded as sent
    assert syncer.sync(7, left, store.get("conflicts", 7)).result == "synced"  # the retry
    assert consent_types(sim, "7") == {"opt-out"}
