"""reconcile --fix deleted an APSIS One profile this integration never created: the person fails the sync
conditions, so every sync skipped them and stored a state saying "not in APSIS One" (exists_in_apsis False).
reconcile took "a state was read" for "ours", and its repair marked the profile as existing, so the worker
deleted it, with the opt-out it held, under on_condition_lost=delete. The README says a profile this integration
did not create is reported and left to a human: a state must say the profile exists for it to be ours."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope, fix
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
CRM = "com.apsis1.keyspaces.crm-id"
SECTION = "com.apsis1.sections.default"
FIRSTNAME = "com.apsis1.attributes.firstname"
CFG = config_from_dict(
    {
        "integration_id": "foreign",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/e",
            "webhook_secret_secret": "x/w",
            "page_size": 10,
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": SECTION,
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "sync_conditions": [{"field": "ROBINSON", "not_equals": "1"}],
        "on_condition_lost": "delete",
        "field_mappings": [{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}],
        "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
    }
)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    esim = EfficySimulator().start()
    asim = ApsisSimulator(client_id="f", client_secret="f-secret", rate_limits=False).start()
    esim.upsert_persons(
        [
            {
                "K_CONTACT": k,
                "NAME": f"N{k}",
                "FIRSTNAME": f"F{k}",
                "EMAIL1": f"f{k}@example.com",
                "ROBINSON": "0",
                "profiles": [12],
            }
            for k in (1, 2, 3)
        ]
        # person 40 fails the sync conditions: this integration never synced them
        + [
            {
                "K_CONTACT": 40,
                "NAME": "N40",
                "FIRSTNAME": "F40",
                "EMAIL1": "f40@example.com",
                "ROBINSON": "1",
                "profiles": [],
            }
        ]
    )
    apsis = ApsisClient(asim.url, "f", "f-secret", section=SECTION, policy=FAST)
    states = MemoryPersonStateStore()
    with EfficyClient(esim.url, esim.api_key, policy=FAST) as efficy:
        syncer = PersonSyncer(CFG, apsis, states, email_lookup=lambda _: [])
        for key, p in efficy.get_persons([1, 2, 3, 40], needed_fields(CFG)).items():
            syncer.sync(key, p, None)
        # the sync saw person 40, skipped them and created nothing: its state says so
        skipped = states.get("foreign", 40)
        assert skipped is not None and not skipped.exists_in_apsis and asim.get_profile(CRM, "40") is None
        # a profile keyed 40 made by someone else (an import by crm-id), where the person later unsubscribed
        apsis.create_profile("40")
        apsis.patch_attributes("40", {FIRSTNAME: "imported"})
        apsis.set_consent("40", NEWS, "email", "opt-in")
        apsis.set_consent("40", NEWS, "email", "opt-out")
        yield {"esim": esim, "asim": asim, "apsis": apsis, "efficy": efficy, "states": states, "syncer": syncer}
    esim.stop()
    asim.stop()


def test_fix_leaves_a_profile_we_never_created_to_a_human(world: dict[str, Any]) -> None:
    assert world["asim"].get_profile(CRM, "40") is not None
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    queued: list[Any] = []
    fixed = fix(CFG, result, world["states"], queued.extend)
    for change in queued:  # the real-time worker: a fresh Efficy read, then PersonSyncer
        k = change.person_key
        person = world["efficy"].get_persons([k], needed_fields(CFG)).get(k)
        world["syncer"].sync(k, person, world["states"].get("foreign", k))

    assert world["asim"].get_profile(CRM, "40") is not None, (
        "reconcile --fix deleted profile 40, which this integration never created (its state: skipped, not in APSIS), and the "
        f"opt-out it held: {result.report.examples['orphaned']} / {fixed}"
    )
