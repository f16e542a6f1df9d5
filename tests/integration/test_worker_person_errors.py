"""The real-time worker reads a batch's persons in one Efficy call: an answer about one person must fail that
person's message only, not its batch-mates' (who would otherwise reach the DLQ with it, opt-outs included).
The Efficy side is the simulator over HTTP, through the client every Lambda uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from efficy_sync.changes import ContactChange
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.sync import Outcome
from efficy_sync.worker import BatchWorker
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import consent_config


@pytest.fixture
def efficy() -> Iterator[EfficySimulator]:
    sim = EfficySimulator().start()
    persons = [
        {
            "K_CONTACT": k,
            "NAME": f"N{k}",
            "EMAIL1": f"p{k}@example.com",
            "OPENED": "1",
            "ROBINSON": "0",
            "profiles": [12],
        }
        for k in (1, 3)
    ]
    requests.post(f"{sim.url}/_sim/persons", json={"persons": persons}, timeout=10).raise_for_status()
    try:
        yield sim
    finally:
        sim.stop()


class Recorder:
    def __init__(self) -> None:
        self.synced: list[int] = []

    def sync(self, key: int, person: Any, state: Any) -> Outcome:
        self.synced.append(key)
        return Outcome(key, "synced" if person else "not_found")


def worker(sim: EfficySimulator, recorder: Recorder) -> BatchWorker:
    # Efficy's real not-found code is unpublished (contracts/efficy.md): configured as another one, the
    # simulator's answer for a deleted person is a business error the client raises
    cfg = consent_config(
        "acme",
        efficy={
            "base_url": f"{sim.url}/crm",
            "api_key_secret": "efficy-sync/acme/efficy",
            "webhook_secret_secret": "efficy-sync/acme/webhook",
            "error_codes": {"not_found": ["CORE-0404"]},
        },
    )

    def get_persons(c: Any, keys: list[int], fields: list[str]) -> dict[int, dict[str, Any]]:
        return EfficyClient.from_config(c, api_key=sim.api_key).get_persons(keys, fields)

    return BatchWorker(lambda _: cfg, lambda _: recorder, get_persons, MemoryPersonStateStore())  # type: ignore[arg-type]


def change(key: int) -> ContactChange:
    return ContactChange(integration_id="acme", person_key=key, operation="Update", date="2026-01-01T10:00:00.000Z")


def test_one_person_efficy_refuses_fails_only_that_persons_message(efficy: EfficySimulator) -> None:
    recorder = Recorder()
    batch = worker(efficy, recorder).prefetch([change(1), change(2), change(3)])
    assert batch.apply(change(1)).result == "synced"
    with pytest.raises(EfficyBusinessError):
        batch.apply(change(2))  # person 2 was never in this Efficy: its own message is retried
    assert batch.apply(change(3)).result == "synced"
    assert recorder.synced == [1, 3]


def test_a_batch_of_one_still_fails_on_the_error(efficy: EfficySimulator) -> None:
    batch = worker(efficy, Recorder()).prefetch([change(2)])
    with pytest.raises(EfficyBusinessError):
        batch.apply(change(2))


def answer_once(sim: EfficySimulator, body: Any) -> None:
    spec = {"path_regex": "^/crm/json", "status": 200, "count": 1, "body": json.dumps(body)}
    requests.post(
        f"{sim.url}/_sim/faults", json={**spec, "content_type": "application/json"}, timeout=5
    ).raise_for_status()


def test_a_not_found_efficy_puts_at_the_top_is_told_apart_when_each_person_is_read_alone(
    efficy: EfficySimulator,
) -> None:
    # Efficy answers the batch's read, and then person 2's own read, with one top-level error (contract §8):
    # it names no person of the batch, but the read of person 2 alone is theirs, so they are gone (confirmed
    # by the records export), not retried into the DLQ as before
    gone = {"#error": {"errorcode": "CORE-0404", "errorstring": "Cont record 2 does not exist"}}
    recorder = Recorder()
    answer_once(efficy, gone)
    batch = worker(efficy, recorder).prefetch([change(1), change(2), change(3)])
    assert batch.apply(change(1)).result == "synced"
    answer_once(efficy, gone)
    assert batch.apply(change(2)).result == "not_found"
    assert batch.apply(change(3)).result == "synced"
    assert recorder.synced == [1, 2, 3]
