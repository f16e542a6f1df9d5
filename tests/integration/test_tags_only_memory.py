"""The Imports step's tags-only file fits the memory of the Lambda that runs it, at the query sizes the README
supports.

Collector._tags_only (fullsync/collect.py: the persons outside every import file whose only change is a query
tag) called `states.get_many(sorted(changes))` for every one of them at once, and kept each one's state in its
row until the last import: `changes` is plan_query_tags' answer, which names every current member of each query
(an unchanged member is only dropped once their state says the tag is set), so on every full sync in import
mode with a 215,000-member query nobody else changed, the Imports step (FullSyncStepFunction, 1,024 MB) read
~1 GB of PersonState before its first tag. A 300,000-member query peaked at 1,459 MB, a 500,000-member one at
2.4 GB: the step failed, was retried, failed the same, and the run never reached its Tags step. It now reads
TAGS_ONLY_READ_CHUNK states at a time and holds the states of one import's rows (`import_rows`) at most.

Each measure runs plan_query_tags and Collector.run (no file: the tags-only file only) in a fresh Python process
over a query whose members are all already tagged (nothing to import), with a store whose get_many decodes each
member's real STATE document (as test_query_tags_memory does). It compares the growth of the peak RSS with the
query's size with a bound per member (the plan's own key -> tags map, ~300 bytes a member, fits in it; the
members' states, ~4.6 KB each, did not), and the peak that growth implies for a 500,000-member query with the
function's MemorySize in template.yaml."""

from __future__ import annotations

import json
import subprocess
import sys

import efficy_sync.fullsync.tags_only as tags_only
import pytest
from efficy_sync.state import PersonState

from tests.lambda_memory import DEMO_STATE, HWM, QUERY_WORLD, memory_of
from tests.memory_store import MemoryPersonStateStore
from tests.support import ROOT

#: one worker for the module: its module-scoped fixture is costly, and `--dist loadgroup` spread its tests
pytestmark = pytest.mark.xdist_group("tags_only_memory")

SCRIPT = (
    HWM
    + DEMO_STATE
    + QUERY_WORLD
    + r"""
import json
from efficy_sync.fullsync.collect import Collector
from efficy_sync.fullsync.tags import plan_query_tags

counted = []
collector = Collector(cfg, efficy=None, apsis=None, states=States(), syncer=None,
                      import_rows=cfg.full_sync.import_rows, on_counters=lambda token, c: counted.append(token))
base = hwm()
changes = plan_query_tags(cfg, lambda q: list(range(1, members + 1)), States(), Members(), "run-1")
result = collector.run([], changes)
peak = hwm()
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "planned": len(changes), "result": result,
                  "counted": counted}))
"""
)

SMALL, LARGE = 20_000, 80_000  # measured; a query of the README's largest size is projected from their growth
LARGEST = 500_000  # query_plan.MAX_MEMBERS: the README supports queries of up to 500,000 members
#: the peak's growth per 100,000 more members: the plan's map fits in it, the members' states (~460 MB) did not
GROWTH_PER_100K_MB = 100


@pytest.fixture(scope="module")
def peaks() -> dict[int, dict]:
    """Both sizes measured at once, each in its own process."""
    running = {
        n: subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(n), str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in (SMALL, LARGE)
    }
    out = {}
    for n, process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        out[n] = json.loads(stdout.strip().splitlines()[-1])
        assert out[n]["planned"] == n
        assert out[n]["result"] == {"files": 0, "next": 1, "more": False}
        assert out[n]["counted"] == []  # every member holds the tag: no row, no import
    return out


def test_the_tags_only_file_s_memory_grows_by_keys_not_by_states_with_the_query_s_size(peaks: dict[int, dict]) -> None:
    growth = (peaks[LARGE]["peak_mb"] - peaks[SMALL]["peak_mb"]) * 100_000 / (LARGE - SMALL)
    assert growth <= GROWTH_PER_100K_MB, (
        f"the tags-only file's peak RSS grows by {growth:.0f} MB per 100,000 members (> {GROWTH_PER_100K_MB} MB)"
    )


def test_the_tags_only_file_fits_the_imports_step_s_lambda_memory(peaks: dict[int, dict]) -> None:
    """The peak of a 500,000-member query is projected from the two measured (measuring it took 20 s)."""
    small, large, limit = peaks[SMALL]["peak_mb"], peaks[LARGE]["peak_mb"], memory_of("FullSyncStepFunction")
    projected = large + (large - small) * (LARGEST - LARGE) / (LARGE - SMALL)
    assert projected <= limit, (
        f"the tags-only file of a {LARGEST}-member query would peak at about {projected:.0f} MB RSS (measured "
        f"{small:.0f} MB at {SMALL}, {large:.0f} MB at {LARGE}) > FullSyncStepFunction MemorySize {limit} MB"
    )


def test_the_tags_only_files_read_their_states_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same files as before (rows in key order, `import_rows` a file), each planned from the states read for
    it only when it is asked for."""
    monkeypatch.setattr(tags_only, "TAGS_ONLY_READ_CHUNK", 3)
    store, reads = MemoryPersonStateStore(), []
    for key in range(1, 13):  # 5 and 10 hold the tag already; 11 has no state (no profile we keep); 12 left
        tags = {"vip": key in (5, 10, 12)}
        store.put(PersonState(integration_id="acme", person_key=str(key), exists_in_apsis=key != 11, tags=tags))

    class States:
        def get_many(self, integration_id: str, keys: list[int]) -> dict[int, PersonState]:
            reads.append(list(keys))
            return store.get_many(integration_id, keys)

    changes = {key: {"vip": key != 12} for key in range(1, 13)}
    files = tags_only.tags_only_files(States(), "acme", changes, lambda tags: tags, rows=4)

    first = next(files)
    assert [row.key for row in first] == [1, 2, 3, 4]
    assert reads == [[1, 2, 3], [4, 5, 6]]  # what the first file needed, not every member's state
    rest = list(files)
    assert [[row.key for row in file] for file in rest] == [[6, 7, 8, 9], [12]]
    assert reads == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    assert [row.ops[0].tags for row in (*first, *rest[0], *rest[1])] == [{"vip": True}] * 8 + [{"vip": False}]
    assert all(row.state is not None and row.state.person_key == str(row.key) for row in first)
