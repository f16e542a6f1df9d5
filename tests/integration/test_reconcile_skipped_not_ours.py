"""reconcile --fix deleted an APSIS One profile this integration never created: the person fails the sync
conditions, so every sync skipped them and stored a state saying "not in APSIS One" (exists_in_apsis False).
reconcile took "a state was read" for "ours", and its repair marked the profile as existing, so the worker
deleted it, with the opt-out it held, under on_condition_lost=delete. The README says a profile this integration
did not create is reported and left to a human: a state must say the profile exists for it to be ours."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope, fix

from tests.integration.reconcile_world import CRM, NEWS, reconcile_config, synced_world

FIRSTNAME = "com.apsis1.attributes.firstname"
CFG = reconcile_config(
    "foreign",
    sync_conditions=[{"field": "ROBINSON", "not_equals": "1"}],
    on_condition_lost="delete",
    field_mappings=[{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}],
)


def person(key: int, robinson: str, profiles: list[int]) -> dict[str, Any]:
    return {"K_CONTACT": key, "NAME": f"N{key}", "FIRSTNAME": f"F{key}", "EMAIL1": f"f{key}@example.com",
            "ROBINSON": robinson, "profiles": profiles}  # fmt: skip


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    # person 40 fails the sync conditions: this integration never synced them
    with synced_world(CFG, [person(k, "0", [12]) for k in (1, 2, 3)] + [person(40, "1", [])]) as synced:
        # the sync saw person 40, skipped them and created nothing: its state says so
        skipped = synced["states"].get("foreign", 40)
        assert skipped is not None and not skipped.exists_in_apsis and synced["asim"].get_profile(CRM, "40") is None
        # a profile keyed 40 made by someone else (an import by crm-id), where the person later unsubscribed
        apsis = synced["apsis"]
        apsis.create_profile("40")
        apsis.patch_attributes("40", {FIRSTNAME: "imported"})
        apsis.set_consent("40", NEWS, "email", "opt-in")
        apsis.set_consent("40", NEWS, "email", "opt-out")
        yield synced


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
        "reconcile --fix deleted profile 40, which this integration never created (its state: skipped), and the "
        f"opt-out it held: {result.report.examples['orphaned']} / {fixed}"
    )
