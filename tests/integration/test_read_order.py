"""A later edit whose D_CHANGE reads earlier is not "stale": snapshots are ordered by when we read them.

Efficy stamps D_CHANGE in its server's naive local time (assumed; the simulator's `stamp_zone`). When the clocks
go back, an edit made at 02:05 in the second pass is stamped before one made at 02:50 in the first. Ordered
by stamps alone, that later edit (here a CRM opt-out) was dropped as stale, in real time and in every full sync
after it. The real PersonSyncer, EfficyClient and ApsisClient against both simulators over HTTP; the state
table is the in-memory store with the DynamoDB store's contract (tests/integration/test_optout_store.py runs
the conditional put against both).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.consent import ASKED_AT, READ_ORDER_SLACK
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS
from tests.memory_store import MemoryPersonStateStore

#: 2026-10-25, Europe/Brussels: 03:00 CEST becomes 02:00 CET (01:00 UTC)
FIRST_PASS = datetime(2026, 10, 25, 0, 50, tzinfo=UTC).timestamp()  # 02:50 CEST
SECOND_PASS = datetime(2026, 10, 25, 1, 5, tzinfo=UTC).timestamp()  # 02:05 CET, a quarter of an hour later


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sims() -> Iterator[tuple[EfficySimulator, Clock, ApsisSimulator]]:
    clock = Clock(FIRST_PASS)
    efficy = EfficySimulator(clock=clock, stamp_zone="Europe/Brussels").start()
    apsis = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield efficy, clock, apsis
    efficy.stop()
    apsis.stop()


def consent_types(apsis: ApsisSimulator, key: int) -> list[str]:
    profile = apsis.get_profile(CRM, str(key))
    assert profile is not None
    return [c["type"] for c in profile["consents"] if c["topic"] == NEWS]


def member_and_syncer(
    efficy_sim: EfficySimulator, apsis_sim: ApsisSimulator, key: int
) -> tuple[MemoryPersonStateStore, PersonSyncer]:
    """Person `key` in Efficy, a member of CRM profile 12 (the newsletter), and a syncer with an empty store."""
    efficy_sim.upsert_persons(
        [
            {
                "K_CONTACT": key,
                "NAME": f"N{key}",
                "FIRSTNAME": f"F{key}",
                "EMAIL1": f"d{key}@example.com",
                "profiles": [12],
            }
        ]
    )
    store = MemoryPersonStateStore()
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    return store, PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])


def test_an_opt_out_stamped_earlier_after_the_clocks_go_back_is_applied(sims) -> None:
    efficy_sim, clock, apsis_sim = sims
    store, syncer = member_and_syncer(efficy_sim, apsis_sim, 7)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        before = efficy.get_persons([7])[7]
        assert before["D_CHANGE"].startswith("2026-10-25T02:50")
        assert syncer.sync(7, before, store.get(CFG.integration_id, 7)).result == "synced"
        assert consent_types(apsis_sim, 7)[-1] == "opt-in"

        clock.now = SECOND_PASS  # a quarter of an hour later the person leaves the CRM profile: an opt-out
        efficy_sim.upsert_persons([{"K_CONTACT": 7, "profiles": []}])
        time.sleep(READ_ORDER_SLACK.total_seconds() + 0.1)  # our clock: the next read is clearly a later one
        after = efficy.get_persons([7])[7]
        assert after["D_CHANGE"].startswith("2026-10-25T02:05")  # stamped before the edit it follows

        outcome = syncer.sync(7, after, store.get(CFG.integration_id, 7))

        assert outcome.result == "synced", outcome
        assert consent_types(apsis_sim, 7)[-1] == "opt-out"
        stored = store.get(CFG.integration_id, 7)
        assert stored.change_stamp.startswith("2026-10-25T02:05") and stored.consents == {f"{NEWS}|email": "opt-out"}

        # the snapshot read before the opt-out, applied late (a full-sync page, say), is still the older one
        calls_before = sum(apsis_sim.calls().values())
        late = syncer.sync(7, before, store.get(CFG.integration_id, 7))
        assert late.result == "unchanged" and not late.operations
        assert sum(apsis_sim.calls().values()) == calls_before
        assert consent_types(apsis_sim, 7)[-1] == "opt-out"


def test_a_re_read_of_an_unchanged_person_writes_nothing(sims) -> None:
    """Each read carries new read times; they alone are no reason to store the state again (an unchanged
    re-sync costs no APSIS call and no state write)."""
    efficy_sim, _clock, apsis_sim = sims
    store, syncer = member_and_syncer(efficy_sim, apsis_sim, 8)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        assert syncer.sync(8, efficy.get_persons([8])[8], None).result == "synced"
        stored = store.get(CFG.integration_id, 8)
        calls = sum(apsis_sim.calls().values())
        time.sleep(READ_ORDER_SLACK.total_seconds() + 0.1)
        again = efficy.get_persons([8])[8]
        assert again[ASKED_AT] > stored.answered_at

        assert syncer.sync(8, again, stored).result == "unchanged"

    assert store.get(CFG.integration_id, 8).revision == stored.revision  # not written again
    assert sum(apsis_sim.calls().values()) == calls
