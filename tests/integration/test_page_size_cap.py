"""A connector that answers fewer persons a page than asked (its installation caps the page size) must fail the
full sync clearly, not skip persons: every later page would read another range than the plan thinks.

The real sync_page and EfficyClient against the Efficy simulator over HTTP (its `page_size_cap`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.fullsync.page import efficy_pages
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import FAST, person

FIELDS = ["K_CONTACT", "EMAIL1"]


@pytest.fixture
def sim() -> Iterator[EfficySimulator]:
    simulator = EfficySimulator().start()
    simulator.upsert_persons([person(k) for k in range(1, 451)])
    yield simulator
    simulator.stop()


def read(sim: EfficySimulator, descriptor: dict) -> list[int]:
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as efficy:
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
