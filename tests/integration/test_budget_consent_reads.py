"""The consent read made before a first opt-in (existing_optouts.held_optouts -> consents_if_profile) went to
APSIS One outside the shared account budget: a full-sync page that opted in known profiles sent about two
requests per budget unit and the account went over its documented limit. Reads of one profile are paced now.

Real sync_page (16 person threads), real ApsisClient over HTTP to the rate-limited APSIS simulator, the
SharedBudget on moto's DynamoDB (the budget test module's fixtures).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from efficy_sync.budget import PacedApsis, SharedBudget
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import RateLimited
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.page import sync_page
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_apsis_budget import table  # noqa: F401  (the moto budget table fixture)
from tests.integration.test_diff_calls import RAW
from tests.memory_store import MemoryPersonStateStore

RATE = 40.0  # a small account, so the test stays short
PERSONS = 60
RETRY = RetryPolicy(total=6, backoff_factor=0.05, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
CFG = config_from_dict({**{k: v for k, v in RAW.items() if k != "tags"}, "integration_id": "probe-budget"})


class NoPace:
    def wait(self) -> None:
        return None


@pytest.fixture
def sims() -> Iterator[tuple[EfficySimulator, ApsisSimulator]]:
    efficy = EfficySimulator().start()
    apsis = ApsisSimulator(client_id="budget", client_secret="budget-secret").start()
    apsis.account_rate = RATE
    apsis.retry_after = False  # 429s are backed off briefly, so the page runs to its end
    apsis.reset()
    yield efficy, apsis
    efficy.stop()
    apsis.stop()


def persons(members: bool) -> list[dict]:
    return [
        {
            "K_CONTACT": k,
            "NAME": f"N{k}",
            "FIRSTNAME": f"F{k}",
            "EMAIL1": f"p{k}@example.com",
            "D_CHANGE": "2024-05-01T10:00:00" if not members else "2024-06-01T10:00:00",
            "profiles": [12] if members else [],
        }
        for k in range(1, PERSONS + 1)
    ]


def test_a_page_opting_in_known_profiles_stays_under_the_account_limit(table: str, sims) -> None:
    efficy_sim, apsis_sim = sims
    apsis = ApsisClient(apsis_sim.url, "budget", "budget-secret", section=CFG.apsis.section, policy=RETRY)
    store = MemoryPersonStateStore()
    descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 500, "tail": False}

    # the persons exist in APSIS already (a first load, no subscription yet): set up without limits
    apsis_sim.rate_limits = False
    efficy_sim.upsert_persons(persons(members=False))
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=RETRY) as efficy:
        first = sync_page(
            CFG, descriptor, efficy=efficy, apsis=PacedApsis(apsis, NoPace()), states=store, dry_run=False
        )
    assert first.counters["failed"] == 0 and len(apsis_sim.profiles()) == PERSONS

    # they join the newsletter's CRM profile: the next full sync opts each one in, paced by the shared budget
    efficy_sim.upsert_persons(persons(members=True))
    time.sleep(1.1)
    apsis_sim.rate_limits = True
    refused_before = apsis_sim.rate()["refused"]
    start = int(time.time()) + 1
    budget = SharedBudget(table, "acct", RATE)
    failure: Exception | None = None
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=RETRY) as efficy:
        try:
            sync_page(CFG, descriptor, efficy=efficy, apsis=PacedApsis(apsis, budget), states=store, dry_run=False)
        except RateLimited as exc:  # the page failed on 429s its own account budget should have prevented
            failure = exc
    end = int(time.time()) - 1

    rate = apsis_sim.rate()
    busy = {s: n for s, n in rate["per_second"].items() if start <= s <= end}
    refused = rate["refused"] - refused_before
    # the budget promises at most 90 % of the account's rate per calendar second, and no 429 from our own load
    assert failure is None and refused == 0 and max(busy.values(), default=0) <= 0.9 * RATE, (
        f"page failure: {failure}; 429s: {refused}; requests per full second: {sorted(busy.values(), reverse=True)} "
        f"(account limit {RATE:g}/s, budget cap {0.9 * RATE:g}/s)"
    )
