"""`reconcile --fix` while the real-time worker syncs a drifting person: the fix must go on, not crash.

`--all` on a large section takes hours between reading a person's state and `--fix` storing its repair mark.
When a webhook's sync stored a newer Efficy change of that person in between, the state store refuses the mark
as a write older than what it holds (StaleWrite, not the ConflictingWrite the fix re-read on): the whole `--fix`
stopped with a traceback, no person was queued, and the persons marked before it kept repair marks that no
queued sync carried out (their next sync, whenever it came, applied them). The mark is now made again on the
state stored meanwhile, as for a ConflictingWrite, and the person is queued.

The real PersonSyncer and clients against both simulators over HTTP, the real PersonStateStore on moto.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope, fix
from efficy_sync.state import PersonState
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.commands import reconcile as reconcile_cli

from tests.integration.reconcile_world import CRM, FAST, SECTION, reconcile_config
from tests.support import simulated_apis

FIRSTNAME = "com.apsis1.attributes.firstname"
CFG = reconcile_config("race", field_mappings=[{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}])


@pytest.fixture
def world(in_process_aws: str) -> Iterator[dict[str, Any]]:
    persons = [
        {"K_CONTACT": k, "NAME": f"N{k}", "FIRSTNAME": f"F{k}", "EMAIL1": f"r{k}@example.com", "profiles": [12]}
        for k in (1, 2, 3)
    ]
    with simulated_apis(in_process_aws, persons, "race", FAST) as world:
        apsis = ApsisClient(world["asim"].url, "race", "race-secret", section=SECTION, policy=FAST)
        syncer = PersonSyncer(CFG, apsis, world["states"], email_lookup=lambda _: [])
        for key, person in world["efficy"].get_persons([1, 2, 3], needed_fields(CFG)).items():
            syncer.sync(key, person, None)
        yield {**world, "apsis": apsis, "syncer": syncer}


def worker(world: dict[str, Any], key: int) -> None:
    """What the real-time worker does with a queued change: a fresh Efficy read, then PersonSyncer."""
    person = world["efficy"].get_persons([key], needed_fields(CFG)).get(key)
    world["syncer"].sync(key, person, world["states"].get(CFG.integration_id, key))


def test_a_person_synced_between_the_check_and_the_fix_is_still_repaired(world: dict[str, Any]) -> None:
    world["apsis"].patch_attributes("1", {FIRSTNAME: "edited in APSIS"})
    world["apsis"].patch_attributes("2", {FIRSTNAME: "edited in APSIS"})
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    assert result.report.counts["attributes"] == 2
    # meanwhile person 1 changes in Efficy and its webhook's sync stores the newer change
    world["esim"].patch_person(1, {"NAME": "Renamed"})
    worker(world, 1)

    queued: list[Any] = []
    fixed = fix(CFG, result, world["states"], queued.extend)

    assert sorted(c.person_key for c in queued) == [1, 2] and fixed["enqueued"] == 2
    for change in queued:
        worker(world, change.person_key)
    for key in ("1", "2"):
        assert world["asim"].get_profile(CRM, key)["attributes"][FIRSTNAME] == f"F{key}"


class Busy:
    """The state store while webhooks keep coming for person 1: before each write of the fix to it, a newer
    Efficy change of that person is synced and stored (the real worker's path), so that write is stale."""

    def __init__(self, world: dict[str, Any]) -> None:
        self.world, self.changes = world, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world["states"], name)

    def put(self, state: PersonState) -> Any:
        if state.person_key == "1":
            self.changes += 1
            self.world["esim"].patch_person(1, {"NAME": f"Renamed {self.changes}"})
            worker(self.world, 1)
        return self.world["states"].put(state)


def test_a_person_left_by_the_fix_because_it_kept_changing_is_reported_and_exits_drift(world: dict[str, Any]) -> None:
    """`--fix` leaves a person whose state another sync kept storing (`changed_meanwhile`): the command exited 0,
    so a script running `reconcile --fix` took every drift for repaired and never ran it again for that person."""
    world["apsis"].patch_attributes("1", {FIRSTNAME: "edited in APSIS"})
    world["apsis"].patch_attributes("2", {FIRSTNAME: "edited in APSIS"})
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    queued: list[Any] = []
    busy = Busy(world)

    fixed = fix(CFG, result, busy, queued.extend)

    assert busy.changes == 3 and fixed["not_fixed"] == {"changed_meanwhile": 1}
    assert [c.person_key for c in queued] == [2]
    out = {"integration_id": "race", "scope": reconcile_cli._scope(Scope()), **result.to_dict(), "fix": fixed}
    assert reconcile_cli.exit_code(out, fixing=True) == reconcile_cli.DRIFT_FOUND == 6
    assert "not fixed: 1 person(s) whose state another sync kept storing" in reconcile_cli.render(out)
    assert "run `efficy-sync reconcile race --all --fix` again" in reconcile_cli.render(out)

    for change in queued:  # the next run, once the queued repair is done, finds and repairs person 1
        worker(world, change.person_key)
    again = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    assert [c.person_key for c in again.checks] == ["1"]
    fixed = fix(CFG, again, world["states"], queued.extend)
    out = {"integration_id": "race", "scope": reconcile_cli._scope(Scope()), **again.to_dict(), "fix": fixed}
    assert fixed["not_fixed"] == {} and reconcile_cli.exit_code(out, fixing=True) == 0
