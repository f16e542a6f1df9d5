"""Query tags fit the memory of the Lambda that mirrors them, at the query sizes the README supports.

mirror_query_tags (fullsync/tags.py) called `states.get_many(current | previous)` for every member of a query at
once and kept the answer while it planned that query's tags: about 4.6 MB of decoded PersonState per thousand
members, so a query of ~215,000 members failed every full sync's Tags step (FullSyncStepFunction, 1024 MB) and
one of ~100,000 with a schedule of its own crashed the sweeper (CleanupFunction, 512 MB) on every sweep. It now
reads TAG_READ_CHUNK states at a time and keeps only the members' keys.

Each measure runs the real mirror_query_tags in a fresh Python process over a query whose members are all already
tagged (nothing to send), with a store whose get_many decodes each member's real STATE document
(person_items.state_document -> PersonStateStore._decode, what the real store keeps per person, without
boto3's own per-batch garbage: a lower bound), and compares the process's peak RSS with the function's
MemorySize in template.yaml (Lambda ends an invocation that passes it: Runtime.OutOfMemory), and the growth of
the peak with the query's size with a bound per member."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lambda_memory import DEMO_STATE, HWM, QUERY_WORLD, memory_of

#: one worker for the module: its module-scoped fixture is costly, and `--dist loadgroup` spread its tests
pytestmark = pytest.mark.xdist_group("query_tags_memory")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = (
    HWM
    + DEMO_STATE
    + QUERY_WORLD
    + r"""
import json
from efficy_sync.fullsync.tags import mirror_query_tags

class Apsis:
    def patch_tags(self, *a): raise AssertionError("nothing to send")

base = hwm()
result = mirror_query_tags(cfg, run_query=lambda q: list(range(1, members + 1)), apsis=Apsis(), states=States(),
                           members=Members(), dry_run=False, run_id="run-1")
peak = hwm()
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "result": result["tags"]}))
"""
)


SMALL, LARGE = 20_000, 80_000  # measured; a query of the README's largest size is projected from their growth
LARGEST = 500_000  # query_plan.MAX_MEMBERS: the README supports queries of up to 500,000 members
#: the peak's growth per 100,000 more members: the keys (a few sets of ints) fit in it, their states did not (~460 MB)
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
        assert out[n]["result"]["vip"]["members"] == n
    return out


def test_the_mirror_s_memory_grows_by_keys_not_by_states_with_the_query_s_size(peaks: dict[int, dict]) -> None:
    growth = (peaks[LARGE]["peak_mb"] - peaks[SMALL]["peak_mb"]) * 100_000 / (LARGE - SMALL)
    assert growth <= GROWTH_PER_100K_MB, (
        f"mirror_query_tags' peak RSS grows by {growth:.0f} MB per 100,000 members (> {GROWTH_PER_100K_MB} MB)"
    )


@pytest.mark.parametrize("function", ["FullSyncStepFunction", "CleanupFunction"])
def test_query_tag_mirror_fits_its_lambda_memory(peaks: dict[int, dict], function: str) -> None:
    """The Tags step mirrors every query tag; the sweeper (512 MB) a query tag with a schedule of its own. The
    peak of a 500,000-member query is projected from the two measured (measuring it took half a minute)."""
    small, large, limit = peaks[SMALL]["peak_mb"], peaks[LARGE]["peak_mb"], memory_of(function)
    projected = large + (large - small) * (LARGEST - LARGE) / (LARGE - SMALL)
    assert projected <= limit, (
        f"mirror_query_tags over a {LARGEST}-member query would peak at about {projected:.0f} MB RSS (measured "
        f"{small:.0f} MB at {SMALL}, {large:.0f} MB at {LARGE}) > {function} MemorySize {limit} MB"
    )
