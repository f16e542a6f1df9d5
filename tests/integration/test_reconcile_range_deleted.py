"""reconcile over a key range (`--from-key` / `--to-key`) whose profiles were all deleted in APSIS One by hand: the
export holds the section's other profiles, so it is not empty, and only an export with no profile of ours at all
is refused. The range's persons were refused as an untrusted export (ApsisUnavailable, exit 4, on every run); they
read as `missing` now."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
SECTION = "com.apsis1.sections.default"
CFG = config_from_dict(
    {
        "integration_id": "ranged",
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
        "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
    }
)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    esim = EfficySimulator().start()
    asim = ApsisSimulator(client_id="r", client_secret="r-secret", rate_limits=False).start()
    esim.upsert_persons(
        [{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"r{k}@example.com", "profiles": [12]} for k in (1, 2, 3)]
    )
    apsis = ApsisClient(asim.url, "r", "r-secret", section=SECTION, policy=FAST)
    states = MemoryPersonStateStore()
    with EfficyClient(esim.url, esim.api_key, policy=FAST) as efficy:
        syncer = PersonSyncer(CFG, apsis, states, email_lookup=lambda _: [])
        for key, p in efficy.get_persons([1, 2, 3], needed_fields(CFG)).items():
            syncer.sync(key, p, None)
        yield {"esim": esim, "asim": asim, "apsis": apsis, "efficy": efficy, "states": states}
    esim.stop()
    asim.stop()


def test_a_key_range_whose_profiles_were_deleted_in_apsis_reads_as_missing(world: dict[str, Any]) -> None:
    world["apsis"].delete_profile("3")  # someone deleted person 3's profile in APSIS One by hand
    reconciler = Reconciler(CFG, world["efficy"], world["apsis"], world["states"])

    everyone = reconciler.run(Scope())  # the whole export: profiles 1 and 2 are in it, 3 is missing
    assert everyone.report.counts.get("missing") == 1

    # the same export, bounded to person 3 (`reconcile ranged --from-key 3 --to-key 3`)
    ranged = reconciler.run(Scope(from_key=3, to_key=3))
    assert ranged.report.counts.get("missing") == 1
