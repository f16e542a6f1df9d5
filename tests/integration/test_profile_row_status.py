"""A server whose CRM-profile rows carry a consent status and keep the row of a profile the person left
(the Efficy simulator's `profile_status_column`; whether Efficy's rows do is not documented, contract §5).
The real EfficyClient and PersonSyncer against both simulators over HTTP: with the rows read as
memberships, the person who left the newsletter profile stayed opted in; unconfigured, the status column
makes the memberships unknown (nothing sent either way, the reason shown); configured, the opt-out goes out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.config import config_from_dict
from efficy_sync.profile_rows import PROFILES_UNREAD
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CRM, FAST, NEWS, RAW, apsis_sim  # noqa: F401
from tests.memory_store import MemoryPersonStateStore

KEY = 31
FIELDS = ["K_CONTACT", "NAME", "FIRSTNAME", "EMAIL1", "D_CHANGE"]


@pytest.fixture
def efficy_sim() -> Iterator[EfficySimulator]:
    sim = EfficySimulator().start()
    sim.profile_status_column = "STATUS"
    sim.upsert_persons([{"K_CONTACT": KEY, "NAME": "N", "FIRSTNAME": "F", "EMAIL1": "r@example.com", "profiles": [12]}])
    yield sim
    sim.stop()


def held(sim: ApsisSimulator) -> str | None:
    profile = sim.get_profile(CRM, str(KEY)) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


def sync(efficy_sim: EfficySimulator, apsis_sim: ApsisSimulator, store: MemoryPersonStateStore, **efficy: Any) -> Any:
    cfg = config_from_dict({**RAW, "efficy": {**RAW["efficy"], **efficy}})
    with EfficyClient(efficy_sim.url, "efficy-test-key", policy=FAST, profile_status=cfg.efficy.profile_status) as e:
        person = e.get_persons([KEY], FIELDS)[KEY]
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=cfg.apsis.section, policy=FAST)
    PersonSyncer(cfg, apsis, store, email_lookup=lambda address: []).sync(
        KEY, person, store.get(cfg.integration_id, KEY)
    )
    return person


def test_a_left_profile_s_row_is_not_read_as_a_membership(
    efficy_sim: EfficySimulator,
    apsis_sim: ApsisSimulator,
) -> None:
    store = MemoryPersonStateStore()
    configured = {"profile_status": {"field": "STATUS"}}
    sync(efficy_sim, apsis_sim, store, **configured)
    assert held(apsis_sim) == "opt-in"

    efficy_sim.patch_person(KEY, {}, [])  # a CRM user unticks the newsletter profile: its row stays, "opt-out"
    person = sync(efficy_sim, apsis_sim, store)  # not configured: the status column is not guessed at
    assert "profiles" not in person and "STATUS" in person[PROFILES_UNREAD]
    assert held(apsis_sim) == "opt-in"  # nothing sent either way; explain and health show the reason

    person = sync(efficy_sim, apsis_sim, store, **configured)
    assert person["profiles"] == []
    assert held(apsis_sim) == "opt-out"
