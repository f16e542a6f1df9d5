"""reconcile over a key range (`--from-key` / `--to-key`) whose profiles were all deleted in APSIS One by hand: the
export holds the section's other profiles, so it is not empty, and only an export with no profile of ours at all
is refused. The range's persons were refused as an untrusted export (ApsisUnavailable, exit 4, on every run); they
read as `missing` now."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.reconcile_run import Reconciler, Scope

from tests.integration.reconcile_world import reconcile_config, synced_world

CFG = reconcile_config("ranged")


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    persons = [{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"r{k}@example.com", "profiles": [12]} for k in (1, 2, 3)]
    with synced_world(CFG, persons) as synced:
        yield synced


def test_a_key_range_whose_profiles_were_deleted_in_apsis_reads_as_missing(world: dict[str, Any]) -> None:
    world["apsis"].delete_profile("3")  # someone deleted person 3's profile in APSIS One by hand
    reconciler = Reconciler(CFG, world["efficy"], world["apsis"], world["states"])

    everyone = reconciler.run(Scope())  # the whole export: profiles 1 and 2 are in it, 3 is missing
    assert everyone.report.counts.get("missing") == 1

    # the same export, bounded to person 3 (`reconcile ranged --from-key 3 --to-key 3`)
    ranged = reconciler.run(Scope(from_key=3, to_key=3))
    assert ranged.report.counts.get("missing") == 1
