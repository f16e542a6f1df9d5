"""A delete in Efficy while the pages run moves persons across a page boundary; the Seams step finds them.

Real page workers (sync_page) and the real clients against the simulators over HTTP; the state table is the
in-memory store with the same contract, so no AWS is needed here (the step's bookkeeping and the state machine
loop are tested in tests/unit/test_template.py and tests/integration/test_state_machine.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.page import sync_page
from efficy_sync.fullsync.plan import plan_pages
from efficy_sync.fullsync.seams import report_counters, resync_seams, seam_windows, window_size
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
CFG = config_from_dict(
    {
        "integration_id": "seams",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/e",
            "webhook_secret_secret": "x/w",
            "page_size": 10,
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "field_mappings": [{"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"}],
        "full_sync": {"page_size": 20, "max_concurrency": 2},
    }
)
PERSONS = 60


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    efficy_sim = EfficySimulator().start()
    apsis_sim = ApsisSimulator(client_id="seams", client_secret="seams-secret", rate_limits=False).start()
    efficy_sim.upsert_persons(
        [
            {"K_CONTACT": k, "NAME": f"N{k}", "FIRSTNAME": f"F{k}", "EMAIL1": f"s{k}@example.com", "profiles": []}
            for k in range(1, PERSONS + 1)
        ]
    )
    apsis = ApsisClient(apsis_sim.url, "seams", "seams-secret", section=CFG.apsis.section, policy=FAST)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        yield {"efficy_sim": efficy_sim, "apsis_sim": apsis_sim, "efficy": efficy, "apsis": apsis}
    efficy_sim.stop()
    apsis_sim.stop()


def in_apsis(world: dict[str, Any]) -> set[int]:
    return {int(p["key"]) for p in world["apsis_sim"].profiles()}


def page(world: dict[str, Any], descriptor: dict[str, Any], states: MemoryPersonStateStore) -> None:
    sync_page(
        CFG, descriptor, efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False, max_concurrency=2
    )


def test_window_sizes_tile_the_efficy_pages() -> None:
    assert [window_size(500, d) for d in (1, 3, 7, 26, 300, 900)] == [1, 4, 10, 50, 500, 500]
    descriptors = plan_pages(1000, 50, 100)
    assert seam_windows(descriptors, 0) == []
    windows = seam_windows(descriptors, 3)
    # a window before every Efficy page a worker reads (two a worker here), not only a worker's first
    assert [w["seam"] for w in windows] == list(range(1, 20))
    # the 5 records (pages of 5) just before record 50: records 45..49 (inside page 0's worker)
    assert windows[0] == {"page": 0, "seam": 1, "first": 9, "pages": 1, "page_size": 5, "tail": False}
    # and before record 100: records 95..99, the boundary between two workers
    assert windows[1] == {"page": 1, "seam": 2, "first": 19, "pages": 1, "page_size": 5, "tail": False}
    # more deletes than an Efficy page: whole pages before the boundary
    whole = seam_windows(descriptors, 120)[1]
    assert whole == {"page": 1, "seam": 2, "first": 0, "pages": 2, "page_size": 50, "tail": False}


def test_persons_a_delete_pushed_across_a_boundary_are_synced_by_the_seams(world: dict[str, Any]) -> None:
    states = MemoryPersonStateStore()
    descriptors = plan_pages(PERSONS, 10, 20)
    assert [d["first"] for d in descriptors] == [0, 2, 4]
    page(world, descriptors[0], states)
    page(world, descriptors[1], states)
    for key in (1, 2, 3):  # deleted in Efficy after the first two pages were read
        world["efficy_sim"].delete_person(key)
    page(world, descriptors[2], states)

    hidden = {41, 42, 43}  # moved from the start of the last page to the end of one already read
    assert not hidden & in_apsis(world), "the gap this step exists for did not occur"
    assert in_apsis(world) == set(range(1, PERSONS + 1)) - hidden

    calls_before = sum(world["apsis_sim"].calls().values())
    done = resync_seams(
        CFG,
        seam_windows(descriptors, 3),
        efficy=world["efficy"],
        apsis=world["apsis"],
        states=states,
        dry_run=False,
        max_concurrency=2,
    )
    assert in_apsis(world) == set(range(1, PERSONS + 1))
    assert done.next == 5 and done.more is False  # a window before each of Efficy pages 1..5
    assert done.counters["seam_windows"] == 5 and done.counters["created"] == 3
    assert report_counters(done.counters) == {
        "seam_windows": 5,
        "seam_persons": done.counters["seam_persons"],
        "created": 3,
    }
    # Only the hidden persons cost APSIS calls: the others in the windows were already up to date.
    writes = sum(v for k, v in world["apsis_sim"].calls().items() if "/profiles/" in k)
    assert writes and sum(world["apsis_sim"].calls().values()) - calls_before <= 3 * 3


def test_seams_that_run_out_of_time_resume_from_where_they_stopped(world: dict[str, Any]) -> None:
    states = MemoryPersonStateStore()
    windows = seam_windows(plan_pages(PERSONS, 10, 20), 3)

    def call(start: int) -> Any:
        return resync_seams(
            CFG,
            windows,
            efficy=world["efficy"],
            apsis=world["apsis"],
            states=states,
            dry_run=False,
            max_concurrency=1,
            start=start,
            time_left=lambda: 0.0,
        )

    first = call(0)
    assert (first.next, first.more) == (1, True), "one window at least per call, then it stops"
    second = call(first.next)
    assert (second.next, second.more) == (2, True)
    while second.more:
        second = call(second.next)
    assert (second.next, second.more) == (len(windows), False)


def test_a_page_fails_when_apsis_refuses_our_credentials_and_marks_no_person_failed(world: dict[str, Any]) -> None:
    """Issue 11.4: a 403 is about the integration, so the page fails (the state machine's Catch or a retry), and
    no person is recorded as a failure the run would then report and leave behind."""
    from efficy_sync.clients.errors import AuthError

    states = MemoryPersonStateStore()
    world["apsis_sim"].add_fault(path_regex=".", status=403, body="{}")
    descriptor = plan_pages(PERSONS, 10, 20)[0]
    with pytest.raises(AuthError):
        page(world, descriptor, states)
    stored = [states.get(CFG.integration_id, k) for k in range(1, 21)]
    assert all(s is None or s.last_outcome != "failed" for s in stored)
    assert in_apsis(world) == set()
