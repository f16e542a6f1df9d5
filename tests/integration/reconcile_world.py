"""A small world for reconcile tests: an integration config, the Efficy and APSIS One simulators, persons synced
once through the real PersonSyncer, and the clients reconcile reads with (shared by the reconcile tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import IntegrationConfig, config_from_dict
from efficy_sync.mapping import needed_fields
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
CRM = "com.apsis1.keyspaces.crm-id"
SECTION = "com.apsis1.sections.default"
NEWSLETTER = [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}]


def reconcile_config(integration_id: str, **over: Any) -> IntegrationConfig:
    """The integration's config: Efficy pages of 10, the newsletter mapping unless `over` says otherwise."""
    raw: dict[str, Any] = {
        "integration_id": integration_id,
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
        "consent_mappings": NEWSLETTER,
    }
    return config_from_dict({**raw, **over})


@contextmanager
def synced_world(cfg: IntegrationConfig, persons: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`persons` in Efficy, each synced once to APSIS One; yields the simulators, clients, states and syncer."""
    esim = EfficySimulator().start()
    asim = ApsisSimulator(client_id="rw", client_secret="rw-secret", rate_limits=False).start()
    try:
        esim.upsert_persons(persons)
        apsis = ApsisClient(asim.url, "rw", "rw-secret", section=SECTION, policy=FAST)
        states = MemoryPersonStateStore()
        with EfficyClient(esim.url, esim.api_key, policy=FAST) as efficy:
            syncer = PersonSyncer(cfg, apsis, states, email_lookup=lambda _: [])
            keys = [int(p["K_CONTACT"]) for p in persons]
            for key, person in efficy.get_persons(keys, needed_fields(cfg)).items():
                syncer.sync(key, person, None)
            yield {"esim": esim, "asim": asim, "apsis": apsis, "efficy": efficy, "states": states, "syncer": syncer}
    finally:
        esim.stop()
        asim.stop()
