"""An export row whose crm-id key is not a whole number but passes str.isdigit() (a superscript digit from a bad
import) crashed reconcile with a ValueError traceback, instead of leaving the key out as not ours (as it does for
"abc"). Only keys written as we write them (ASCII digits, no leading zero) are ours now."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.reconcile_run import Reconciler, Scope
from efficy_sync_tools.sims import apsis_export as sim_export

from tests.integration.reconcile_world import reconcile_config, synced_world

CFG = reconcile_config(
    "oddkey",
    consent_mappings=[],
    field_mappings=[{"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"}],
)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    persons = [
        {"K_CONTACT": k, "NAME": f"N{k}", "FIRSTNAME": f"F{k}", "EMAIL1": f"o{k}@example.com", "profiles": []}
        for k in (1, 2, 3)
    ]
    with synced_world(CFG, persons) as synced:
        yield synced


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
