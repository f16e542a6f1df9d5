"""A 409 to a person's attribute PATCH (contracts/apsis-one.md section 3: a new e-mail address that is another
profile's key) was read as an integration conflict: retried into the DLQ on every sync, and the CRM opt-out planned
after it never reached APSIS One. It is this person's data, as a 400 on a value is: the withdrawals go out, the
failure is recorded on the person."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import ApiError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, person
from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
NEWS = "usercreated.topics.newsletter-ab12"
SLOT = f"{NEWS}|email"
PROBLEM = "application/problem+json"


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def opted_in(sim: ApsisSimulator) -> tuple[PersonSyncer, MemoryPersonStateStore]:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7), None).result == "synced"
    assert store.get(CFG.integration_id, 7).consents == {SLOT: "opt-in"}
    return syncer, store


def apsis_consents(sim: ApsisSimulator) -> set[tuple[str, str]]:
    return {(c["topic"], c["type"]) for c in sim.get_profile(CRM, "7")["consents"]}


def test_a_409_to_the_attribute_patch_does_not_hold_back_the_crm_opt_out(sim: ApsisSimulator) -> None:
    """The v2 attribute PATCH can change an attribute that is a profile key; a new e-mail address another APSIS
    profile already holds as its key is refused with 409 (a person-level conflict). The person also left the
    newsletter in the CRM: the opt-out must still reach APSIS One, as it does after a 400 on a value."""
    syncer, store = opted_in(sim)
    sim.add_fault(
        path_regex="/attributes$", method="PATCH", status=409, count=1000, content_type=PROBLEM,
        body=json.dumps({"title": "Conflict", "status": 409,
                         "detail": "the value of com.apsis1.attributes.email is the key of another profile"}),
    )  # fmt: skip
    left = {**person(7, stamp="2024-05-02T10:00:00"), "EMAIL1": "taken@example.com", "profiles": []}
    errors = []
    for _ in range(6):  # the queue's 5 tries, then a redrive
        try:
            syncer.sync(7, left, store.get(CFG.integration_id, 7))
            break
        except ApiError as exc:
            errors.append(type(exc).__name__)
    assert (NEWS, "opt-out") in apsis_consents(sim), f"CRM opt-out never sent; sync raised {errors}"
