"""The opt-out write-back racing a real-time opt-in of the same person: the opt-out is never lost.

A CRM user adds the person to the newsletter profile (t0); the webhook's change is applied late, while the
person unsubscribes in APSIS One (t1 > t0) and the write-back runs. The worker read the person a member, stored
its write-ahead and sent the opt-in; the write-back took the person out of the profile, confirmed its record
and sent the opt-out in between, so APSIS received the opt-out first and the worker's opt-in after it (a call
slowed by APSIS's rate limit is enough). The worker's state write must then be refused as older than the
write-back's, its opt-in marked unknown in the stored state, and the change retried: the retry sends the
opt-out again.

The real PersonSyncer, WriteBack and clients against both simulators over HTTP, the real PersonStateStore on
moto; the only test device is the moment the write-back runs (inside the worker's opt-in call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from efficy_sync.changes import ContactChange
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import TransientError
from efficy_sync.mapping import needed_fields
from efficy_sync.observability import metrics
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBack
from efficy_sync.state import utc_now
from efficy_sync.sync import PersonSyncer
from efficy_sync.worker import BatchWorker

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS
from tests.support import simulated_apis


class SlowOptIn(ApsisClient):
    """The worker's APSIS client: `meanwhile` runs once, right before its opt-in call goes out."""

    meanwhile: Callable[[], None] | None = None

    def set_consent(self, key: str, topic: str, channel: str, type_: str, *args: Any, **kwargs: Any) -> Any:
        if type_ == "opt-in" and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return super().set_consent(key, topic, channel, type_, *args, **kwargs)


@pytest.fixture
def world(in_process_aws: str) -> Iterator[dict[str, Any]]:
    persons = [{"K_CONTACT": 9, "NAME": "N9", "FIRSTNAME": "F9", "EMAIL1": "r9@example.com", "profiles": []}]
    with simulated_apis(in_process_aws, persons, "race", FAST) as world:
        yield world


def apsis(world: dict[str, Any], cls: type[ApsisClient] = ApsisClient) -> ApsisClient:
    return cls(world["asim"].url, "race", "race-secret", section=CFG.apsis.section, policy=FAST)


def news_consents(world: dict[str, Any]) -> list[str]:
    profile = world["asim"].get_profile(CRM, "9")
    assert profile is not None
    return [c["type"] for c in profile["consents"] if c["topic"] == NEWS]


def unsubscribe_and_write_back(world: dict[str, Any]) -> Callable[[], None]:
    """t1: the person unsubscribes in APSIS One, and the write-back runs (its own syncer and APSIS client)."""
    states = world["states"]
    write_back = WriteBack(
        CFG, world["efficy"], states, PersonSyncer(CFG, apsis(world), states, email_lookup=lambda _: [])
    )
    message = OptOutMessage(
        integration_id=CFG.integration_id,
        event="email.unsubscribe",
        profile_key=9,
        slots=[SlotRef(topic=NEWS, channel="email")],
        occurred_at=utc_now(),
    )
    return lambda: write_back.process(message)


def test_an_opt_in_sent_while_the_write_back_opted_the_person_out_is_withdrawn_by_the_retry(
    world: dict[str, Any],
) -> None:
    states, efficy = world["states"], world["efficy"]
    worker_apsis = apsis(world, SlowOptIn)
    worker = PersonSyncer(CFG, worker_apsis, states, email_lookup=lambda _: [])
    fields = needed_fields(CFG)
    assert worker.sync(9, efficy.get_persons([9], fields)[9], None).result == "synced"  # not a member yet
    assert world["asim"].get_profile(CRM, "9") is not None

    world["esim"].upsert_persons([{"K_CONTACT": 9, "profiles": [12]}])  # t0: added to the newsletter in the CRM
    member = efficy.get_persons([9], fields)[9]  # the worker's read of the late webhook's change

    worker_apsis.meanwhile = unsubscribe_and_write_back(world)

    with pytest.raises(TransientError):  # its state write met the write-back's newer one: retried
        worker.sync(9, member, states.get(CFG.integration_id, 9))
    assert news_consents(world)[-1] == "opt-in"  # the worker's opt-in landed after the write-back's opt-out
    worker.sync(9, efficy.get_persons([9], fields)[9], states.get(CFG.integration_id, 9))  # the retry

    assert worker_apsis.meanwhile is None, "the worker sent no opt-in: the race did not happen"
    assert 12 not in set(world["esim"].get_person(9)["profiles"])
    assert news_consents(world)[-1] == "opt-out", f"the APSIS opt-out was lost: {news_consents(world)}"


def test_the_real_time_worker_withdraws_the_raced_opt_in_at_once_not_after_the_queue_s_retry(
    world: dict[str, Any],
) -> None:
    """The same race through the real-time worker (BatchWorker, as apply_changes runs it): the message is not
    failed back to the queue, whose first retry comes 30 s later at the earliest, while APSIS holds the opt-in of
    a person who just unsubscribed. The one `apply` syncs the person again from a fresh Efficy read and sends the
    opt-out."""
    states, efficy = world["states"], world["efficy"]
    worker_apsis = apsis(world, SlowOptIn)
    syncer = PersonSyncer(CFG, worker_apsis, states, email_lookup=lambda _: [])
    worker = BatchWorker(
        get_config=lambda _: CFG,
        build_syncer=lambda _: syncer,
        get_persons=lambda cfg, keys, fields: efficy.get_persons(keys, fields),
        states=states,
    )
    change = ContactChange(integration_id=CFG.integration_id, person_key=9, operation="Update")
    assert worker.prefetch([change]).apply(change).result == "synced"  # not a member yet

    world["esim"].upsert_persons([{"K_CONTACT": 9, "profiles": [12]}])  # t0: added to the newsletter in the CRM
    batch = worker.prefetch([change])  # the worker's read of the late webhook's change: a member
    worker_apsis.meanwhile = unsubscribe_and_write_back(world)

    outcome = batch.apply(change)  # no TransientError: the message is acknowledged with the opt-out sent

    assert worker_apsis.meanwhile is None, "the worker sent no opt-in: the race did not happen"
    types = news_consents(world)  # the simulator keeps a slot's newest consent: the opt-in landed, then this
    assert types[-1] == "opt-out", f"the raced opt-in was not withdrawn at once: {types}"
    assert outcome.result == "synced"
    assert metrics.provider.metric_set["RacedSyncsRepeated"]["Value"] == [1.0]  # what operators see of it
    assert 12 not in set(world["esim"].get_person(9)["profiles"])
    stored = states.get(CFG.integration_id, 9)
    assert stored is not None and stored.consents.get(f"{NEWS}|email") == "opt-out", stored
