"""reconcile --fix after an APSIS One export that left a profile out (or answered 200 with no profiles): the
persons read as `missing`, and the repair wiped the state's record of the opt-ins we sent. A person who meanwhile
left the CRM profile (a lost webhook) then never got the opt-out: the repair sync and every later sync saw "never
opted in: nothing to withdraw", and APSIS One kept the opt-in the CRM withdrew. The repair now makes what we sent
unknown instead of forgetting it; and an export with no profile at all while profiles are known is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope, fix
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.reconcile_world import CRM, NEWS, reconcile_config, synced_world

CFG = reconcile_config("withdraw")


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    persons = [{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"w{k}@example.com", "profiles": [12]} for k in (1, 2, 3)]
    with synced_world(CFG, persons) as synced:
        # person 1 leaves the CRM profile (withdraws consent in the CRM); the webhook is lost
        synced["esim"].upsert_persons([{"K_CONTACT": 1, "NAME": "N1", "EMAIL1": "w1@example.com", "profiles": []}])
        yield synced


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
