"""reconcile --fix after an APSIS One export that left a profile out (or answered 200 with no profiles): the
persons read as `missing`, and the repair wiped the state's record of the opt-ins we sent. A person who meanwhile
left the CRM profile (a lost webhook) then never got the opt-out: the repair sync and every later sync saw "never
opted in: nothing to withdraw", and APSIS One kept the opt-in the CRM withdrew. The repair now makes what we sent
unknown instead of forgetting it; and an export with no profile at all while profiles are known is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import ApsisUnavailable
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
CFG = config_from_dict(
    {
        "integration_id": "withdraw",
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
    asim = ApsisSimulator(client_id="w", client_secret="w-secret", rate_limits=False).start()
    esim.upsert_persons(
        [{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"w{k}@example.com", "profiles": [12]} for k in (1, 2, 3)]
    )
    apsis = ApsisClient(asim.url, "w", "w-secret", section=SECTION, policy=FAST)
    states = MemoryPersonStateStore()
    with EfficyClient(esim.url, esim.api_key, policy=FAST) as efficy:
        syncer = PersonSyncer(CFG, apsis, states, email_lookup=lambda _: [])
        for key, p in efficy.get_persons([1, 2, 3], needed_fields(CFG)).items():
            syncer.sync(key, p, None)
        # person 1 leaves the CRM profile (withdraws consent in the CRM); the webhook is lost
        esim.upsert_persons([{"K_CONTACT": 1, "NAME": "N1", "EMAIL1": "w1@example.com", "profiles": []}])
        yield {"esim": esim, "asim": asim, "apsis": apsis, "efficy": efficy, "states": states, "syncer": syncer}
    esim.stop()
    asim.stop()


def consent_of(asim: ApsisSimulator, key: str) -> set[str]:
    p = asim.get_profile(CRM, key)
    return {c["type"] for c in p["consents"] if c["topic"] == NEWS}


def worker(world: dict[str, Any], k: int) -> None:
    """What the real-time worker does with a change: a fresh Efficy read, then PersonSyncer."""
    persons = world["efficy"].get_persons([k], needed_fields(CFG))
    world["syncer"].sync(k, persons.get(k), world["states"].get("withdraw", k))


class LeftOut(dict):  # type: ignore[type-arg]
    """The simulator's export jobs, each leaving out the profiles `drop` names (an export that is incomplete)."""

    def __init__(self, asim: ApsisSimulator, drop: set[str]) -> None:
        super().__init__()
        self.asim, self.drop = asim, drop

    def __setitem__(self, key: str, job: Any) -> None:
        exports = self.asim.profile_exports
        kept = [p for (_, k), p in self.asim._profiles.items() if k not in self.drop]
        job.snapshot = [exports._row(p, job) for p in kept]
        super().__setitem__(key, job)


@pytest.mark.parametrize("export", ["whole", "left out"])
def test_a_repair_after_an_empty_export_still_withdraws_a_crm_opt_out(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, export: str
) -> None:
    assert consent_of(world["asim"], "1") == {"opt-in"}
    if export == "left out":
        world["asim"].profile_exports._jobs = LeftOut(world["asim"], {"1"})
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    queued: list[Any] = []
    fix(CFG, result, world["states"], queued.extend)
    for change in queued:
        worker(world, change.person_key)
    # and a later real-time sync of person 1 (a webhook for another edit) does not withdraw it either
    worker(world, 1)

    assert consent_of(world["asim"], "1") == {"opt-out"}, (
        f"export {export}: report {result.report.counts}; person 1 left the CRM profile but APSIS One still holds "
        f"the opt-in (state consents now {world['states'].get('withdraw', 1).consents})"
    )


def test_an_export_with_no_profile_while_profiles_are_known_is_not_trusted(world: dict[str, Any]) -> None:
    world["asim"].profile_exports._jobs = LeftOut(world["asim"], {"1", "2", "3"})
    before = {k: world["states"].get("withdraw", k) for k in (1, 2, 3)}
    with pytest.raises(ApsisUnavailable, match="not trusted"):
        Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    assert {k: world["states"].get("withdraw", k) for k in (1, 2, 3)} == before
