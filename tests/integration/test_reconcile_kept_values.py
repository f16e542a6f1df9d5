"""`reconcile --fix` blanked an APSIS One value this integration never wrote: the CRM field is empty (it always
was), the person typed a first name into an APSIS form, and reconcile called it `attributes` drift ("should:
clear"). Its repair marked the attribute as sent, so the worker's sync cleared it, where every sync leaves it:
the sync clears only a value it sent once the CRM field is emptied (person_plan: positive evidence). An empty
field is no evidence against a value that never came from the CRM. It is now a note (`kept_values`), and a value
we did send is still cleared once the CRM field is emptied behind our back.

The real PersonSyncer and clients against both simulators over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope, fix

from tests.integration.reconcile_world import CRM, reconcile_config, synced_world

FIRSTNAME = "com.apsis1.attributes.firstname"
CFG = reconcile_config("kept", field_mappings=[{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}])


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    persons = [
        {"K_CONTACT": 1, "NAME": "N1", "FIRSTNAME": "", "EMAIL1": "k1@example.com", "profiles": [12]},
        {"K_CONTACT": 2, "NAME": "N2", "FIRSTNAME": "Sent", "EMAIL1": "k2@example.com", "profiles": [12]},
    ]
    with synced_world(CFG, persons) as synced:
        yield synced


def fix_through_the_worker(world: dict[str, Any]) -> dict[str, Any]:
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    queued: list[Any] = []
    fix(CFG, result, world["states"], queued.extend)
    for change in queued:  # the real-time worker: a fresh Efficy read, then PersonSyncer
        key = change.person_key
        person = world["efficy"].get_persons([key], needed_fields(CFG)).get(key)
        world["syncer"].sync(key, person, world["states"].get(CFG.integration_id, key))
    return result.to_dict()


def test_a_value_we_never_wrote_is_not_blanked(world: dict[str, Any]) -> None:
    world["apsis"].patch_attributes("1", {FIRSTNAME: "typed in an APSIS form"})

    report = fix_through_the_worker(world)

    assert world["asim"].get_profile(CRM, "1")["attributes"].get(FIRSTNAME) == "typed in an APSIS form", report
    assert report["counts"]["attributes"] == 0 and report["notes"]["kept_values"] == 1


def test_a_value_we_sent_is_cleared_once_the_crm_field_is_emptied(world: dict[str, Any]) -> None:
    world["esim"].patch_person(2, {"FIRSTNAME": ""})  # no webhook reached us

    report = fix_through_the_worker(world)

    assert report["counts"]["attributes"] == 1
    assert FIRSTNAME not in world["asim"].get_profile(CRM, "2")["attributes"]
