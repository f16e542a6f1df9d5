"""Planning pages: counting by probing (against the Efficy simulator over HTTP), descriptors, tail paging."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.consent import ANSWERED_AT, ASKED_AT
from efficy_sync.fullsync.page import Pace, efficy_pages
from efficy_sync.fullsync.plan import MAX_TAIL_EXTENSION, count_records, efficy_probe, plan_pages, whole_persons
from efficy_sync_tools.sims.efficy import EfficySimulator
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def efficy() -> Iterator[tuple[EfficySimulator, EfficyClient]]:
    sim = EfficySimulator(api_key="plan-test-key").start()
    client = EfficyClient(f"{sim.url}/crm", "plan-test-key")
    yield sim, client
    client.close()
    sim.stop()


def seed(sim: EfficySimulator, keys: list[int]) -> None:
    sim.reset()
    sim.upsert_persons([{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"p{k}@example.com"} for k in keys])


@given(st.integers(min_value=0, max_value=5000))
def test_count_records_finds_the_exact_count_in_logarithmic_probes(n: int) -> None:
    probes: list[int] = []

    def exists(index: int) -> bool:
        probes.append(index)
        return index < n

    assert count_records(exists) == n
    assert len(probes) <= 3 * max(1, n).bit_length() + 3  # an empty answer is asked twice


def test_probing_the_simulator_counts_its_persons_with_few_small_calls(efficy) -> None:
    sim, client = efficy
    seed(sim, list(range(10, 1310, 1)))  # 1,300 persons, keys not starting at 1
    before = sum(sim.calls().values())
    assert count_records(efficy_probe(client)) == 1300
    assert sum(sim.calls().values()) - before <= 36  # 2 log2(N), and each empty answer asked again


@pytest.mark.parametrize(
    ("total", "efficy_size", "size", "expected"),
    [
        (0, 500, 500, [(0, 1)]),
        (1, 500, 500, [(0, 1)]),
        (1000, 500, 500, [(0, 1), (1, 1)]),
        (1001, 500, 500, [(0, 1), (1, 1), (2, 1)]),
        (2500, 500, 1000, [(0, 2), (2, 2), (4, 1)]),
        (250, 100, 150, [(0, 1), (1, 1), (2, 1)]),  # a page size that is not a multiple rounds down
    ],
)
def test_plan_pages_covers_every_efficy_page_once_and_ends_with_a_tail(total, efficy_size, size, expected) -> None:
    descriptors = plan_pages(total, efficy_size, size)
    assert [(d["first"], d["pages"]) for d in descriptors] == expected
    assert [d["page"] for d in descriptors] == list(range(len(expected)))
    assert [d["tail"] for d in descriptors] == [False] * (len(expected) - 1) + [True]
    assert all(d["page_size"] == efficy_size for d in descriptors)


def test_the_tail_page_reads_persons_added_after_the_plan(efficy) -> None:
    sim, client = efficy
    seed(sim, list(range(1, 251)))
    descriptors = plan_pages(count_records(efficy_probe(client)), 100, 100)
    sim.upsert_persons([{"K_CONTACT": k, "NAME": "late"} for k in range(251, 420)])  # grows during the sync
    seen = [p["K_CONTACT"] for d in descriptors for records in efficy_pages(client, d, ["K_CONTACT"]) for p in records]
    assert seen == list(range(1, 420))
    assert MAX_TAIL_EXTENSION >= 2


def test_pages_ask_efficy_for_the_mapped_fields_only(efficy) -> None:
    sim, client = efficy
    seed(sim, [1, 2])
    sim.upsert_persons([{"K_CONTACT": 1, "FIRSTNAME": "Jo", "ROBINSON": "0"}])
    (records,) = list(efficy_pages(client, plan_pages(2, 100, 100)[0], ["K_CONTACT", "FIRSTNAME"]))
    # plus when we asked for the page and had its answer (consent.read_order_bound), not Efficy fields
    assert set(records[0]) == {"K_CONTACT", "D_CHANGE", "FIRSTNAME", "profiles", ASKED_AT, ANSWERED_AT}


def test_pace_spaces_calls() -> None:
    import time

    pace = Pace(50.0)
    started = time.monotonic()
    for _ in range(11):
        pace.wait()
    assert time.monotonic() - started >= 0.18


def test_the_apsis_pace_follows_the_setting_at_each_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from efficy_sync.fullsync.page import worker_rate

    monkeypatch.delenv("EFFICY_SYNC_APSIS_RATE", raising=False)
    assert worker_rate(5) == pytest.approx(100 * 0.9 / 5)  # APSIS's documented 100 requests/s per account
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "1000")
    assert worker_rate(5) == pytest.approx(1000 * 0.9 / 5)


def test_whole_persons_moves_copies_cut_by_a_page_boundary_to_the_first_copy():
    def rows(*keys):
        return [{"K_CONTACT": k} for k in keys]

    pages = [rows(1, 2, 3), rows(3, 3, 4), rows(5)]
    assert [[r["K_CONTACT"] for r in p] for p in whole_persons(pages)] == [[1, 2, 3, 3, 3], [4], [5]]
    # a page that held only copies is given empty (pages keep their numbers), and copies run on beyond it
    pages = [rows(1, 3), rows(3, 3), rows(3, 4), []]
    assert [[r["K_CONTACT"] for r in p] for p in whole_persons(pages)] == [[1, 3, 3, 3, 3], [], [4], []]
    assert list(whole_persons([])) == []
