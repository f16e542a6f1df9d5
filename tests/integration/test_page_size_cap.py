"""A connector that answers fewer persons a page than asked (its installation caps the page size) must fail the
full sync clearly, not skip persons: every later page would read another range than the plan thinks. And one
short or empty answer (a read cut off) is no end of the data: the page is read again.

The real efficy_pages and EfficyClient against the Efficy simulator over HTTP (its `page_size_cap`); a short
answer once is the client's answer cut down, as a proxy would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyBusinessError, EfficyInconclusive
from efficy_sync.fullsync.page import efficy_pages
from efficy_sync.fullsync.plan import MAX_TAIL_EXTENSION, count_records, efficy_probe
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import FAST, person

FIELDS = ["K_CONTACT", "EMAIL1"]


@pytest.fixture
def sim() -> Iterator[EfficySimulator]:
    simulator = EfficySimulator().start()
    simulator.upsert_persons([person(k) for k in range(1, 451)])
    yield simulator
    simulator.stop()


class CutOnce:
    """The real client, whose answer for one (page, size) is cut to `keep` records `times` times."""

    def __init__(self, client: EfficyClient, page: int, size: int, keep: int, times: int = 1) -> None:
        self.client, self.page, self.size, self.keep, self.times = client, page, size, keep, times

    def list_persons_page(self, page: int, size: int, *args: object, **kwargs: object) -> list:
        records = self.client.list_persons_page(page, size, *args, **kwargs)
        if (page, size) == (self.page, self.size) and self.times > 0:
            self.times -= 1
            return records[: self.keep]
        return records


def read(sim: EfficySimulator, descriptor: dict, cut: tuple[int, int, int, int] | None = None) -> list[int]:
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as client:
        efficy = CutOnce(client, *cut) if cut else client
        return [p["K_CONTACT"] for page in efficy_pages(efficy, descriptor, FIELDS) for p in page]


def record_pages(sim: EfficySimulator) -> int:
    return sum(n for route, n in sim.calls().items() if route.startswith("GET /v1/records/"))


def test_a_capped_page_size_fails_the_page_instead_of_skipping_persons(sim: EfficySimulator) -> None:
    sim.page_size_cap = 100
    with pytest.raises(EfficyBusinessError) as raised:
        read(sim, {"page": 0, "first": 0, "pages": 1, "page_size": 200, "tail": False})
    assert raised.value.code == "PAGE_SIZE_CAPPED" and "efficy.page_size to 100" in str(raised.value)


def test_the_last_short_page_ends_the_read_at_the_cost_of_one_small_read(sim: EfficySimulator) -> None:
    keys = read(sim, {"page": 2, "first": 2, "pages": 1, "page_size": 200, "tail": True})
    assert keys == list(range(401, 451))
    assert record_pages(sim) == 2  # the short page, then the empty one after it


def test_full_pages_read_without_an_extra_call(sim: EfficySimulator) -> None:
    assert read(sim, {"page": 0, "first": 0, "pages": 2, "page_size": 200, "tail": False}) == list(range(1, 401))
    assert record_pages(sim) == 2


@pytest.mark.parametrize("keep", [0, 37], ids=["empty", "short"])
def test_one_cut_answer_mid_range_is_read_again_not_taken_for_the_end(sim: EfficySimulator, keep: int) -> None:
    """Taken for the end, it silently skipped the rest of the page worker's persons (their CRM opt-outs never
    reached APSIS One) and the run succeeded."""
    descriptor = {"page": 0, "first": 0, "pages": 2, "page_size": 100, "tail": False}
    assert read(sim, descriptor, cut=(1, 100, keep, 1)) == list(range(1, 201))


def test_a_page_empty_twice_with_persons_after_it_is_inconclusive(sim: EfficySimulator) -> None:
    with pytest.raises(EfficyInconclusive):
        read(sim, {"page": 0, "first": 0, "pages": 3, "page_size": 100, "tail": False}, cut=(1, 100, 0, 2))


def test_the_tail_fails_loudly_when_persons_remain_past_its_reach(sim: EfficySimulator) -> None:
    """A plan that counted too few: the tail reads MAX_TAIL_EXTENSION pages past its share, and then says so
    instead of ending the run as if every person was read."""
    sim.upsert_persons([person(k) for k in range(451, 451 + (MAX_TAIL_EXTENSION + 2) * 10)])
    with pytest.raises(EfficyBusinessError) as raised:
        read(sim, {"page": 0, "first": 0, "pages": 1, "page_size": 10, "tail": True})
    assert raised.value.code == "MORE_THAN_PLANNED"


def test_the_count_is_not_cut_short_by_one_empty_probe(sim: EfficySimulator) -> None:
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as client:
        probe = efficy_probe(CutOnce(client, 256, 1, 0, 1))  # the record at index 256 answers empty once
        assert count_records(probe) == 450


def test_a_server_that_reads_the_other_page_size_spelling_fails_the_plan_not_the_persons(
    sim: EfficySimulator,
) -> None:
    """A connector that reads only `pageSize` (contract §4 gives both spellings) answered pages of its own 100
    to a plan that asked one-record pages: the count came out at one per hundred persons and the run read a
    tenth of them, then SUCCEEDED. It now fails at the first answer with more persons than asked."""
    sim.page_size_param, sim.default_page_size = "pageSize", 100
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as client, pytest.raises(EfficyBusinessError) as raised:
        count_records(efficy_probe(client))
    assert raised.value.code == "PAGE_SIZE_IGNORED" and "efficy.page_size_param" in str(raised.value)
    with EfficyClient(sim.url, sim.api_key, policy=FAST, page_size_param="pageSize") as client:
        assert count_records(efficy_probe(client)) == 450
        pages = efficy_pages(client, {"page": 0, "first": 0, "pages": 3, "page_size": 200, "tail": True}, FIELDS)
        assert [p["K_CONTACT"] for page in pages for p in page] == list(range(1, 451))


def test_a_records_page_that_is_a_bare_list_is_read(sim: EfficySimulator) -> None:
    """APSIS's own generic-connector code reads a records page as a bare list; the client knew only the
    `{"records": [...]}` wrapper, so every full sync failed and no delete could be confirmed."""
    sim.records_shape = "array"
    assert read(sim, {"page": 0, "first": 0, "pages": 3, "page_size": 200, "tail": True}) == list(range(1, 451))
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as client:
        assert count_records(efficy_probe(client)) == 450
        assert [p["K_CONTACT"] for p in client.list_persons_page(0, 10, FIELDS, ids=[3, 999])] == [3]


def test_config_validate_online_names_the_page_size_setting(sim: EfficySimulator) -> None:
    """`config validate --online` reads one one-person page: the spelling mismatch is shown before a run."""
    from types import SimpleNamespace

    from efficy_sync_tools.commands._export_check import page_size_problems

    cfg = SimpleNamespace(efficy=SimpleNamespace(page_size_param="page_size"))
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as client:
        assert page_size_problems(client, cfg) == ([], [])
        sim.page_size_param, sim.default_page_size = "pageSize", 100
        problems, notes = page_size_problems(client, cfg)
    assert [p.path for p in problems] == ["efficy.page_size_param"] and not notes
    assert "set efficy.page_size_param to the other spelling" in problems[0].message
