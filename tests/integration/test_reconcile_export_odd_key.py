"""An export row whose crm-id key is not a whole number but passes str.isdigit() (a superscript digit from a bad
import) crashed reconcile with a ValueError traceback, instead of leaving the key out as not ours (as it does for
"abc"). Only keys written as we write them (ASCII digits, no leading zero) are ours now."""

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
from efficy_sync_tools.sims import apsis_export as sim_export
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
SECTION = "com.apsis1.sections.default"
CFG = config_from_dict(
    {
        "integration_id": "oddkey",
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
        "field_mappings": [{"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"}],
    }
)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    esim = EfficySimulator().start()
    asim = ApsisSimulator(client_id="o", client_secret="o-secret", rate_limits=False).start()
    esim.upsert_persons(
        [
            {"K_CONTACT": k, "NAME": f"N{k}", "FIRSTNAME": f"F{k}", "EMAIL1": f"o{k}@example.com", "profiles": []}
            for k in (1, 2, 3)
        ]
    )
    apsis = ApsisClient(asim.url, "o", "o-secret", section=SECTION, policy=FAST)
    states = MemoryPersonStateStore()
    with EfficyClient(esim.url, esim.api_key, policy=FAST) as efficy:
        syncer = PersonSyncer(CFG, apsis, states, email_lookup=lambda _: [])
        for key, p in efficy.get_persons([1, 2, 3], needed_fields(CFG)).items():
            syncer.sync(key, p, None)
        yield {"efficy": efficy, "apsis": apsis, "states": states}
    esim.stop()
    asim.stop()


def test_a_key_that_is_not_a_whole_number_is_not_a_crash(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = sim_export.ProfileExports._row

    def row(profile, job):  # type: ignore[no-untyped-def]
        out = original(profile, job)
        ((ks, key),) = out["keys"].items()
        if key == "3":
            out["keys"] = {ks: "\u00b3"}  # "³": str.isdigit() is True, int() refuses it
        return out

    monkeypatch.setattr(sim_export.ProfileExports, "_row", staticmethod(row))
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    assert result.report.persons_checked == 3
