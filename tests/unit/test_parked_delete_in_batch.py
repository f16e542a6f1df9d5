"""During a full sync, an Update and then a Delete of one person in the same batch. The run counts parked
deletes (`parked_deletes`) to size its Seams step; the Delete must be counted."""

from __future__ import annotations

from typing import Any

from efficy_sync.changes import ContactChange
from efficy_sync.worker import BatchWorker

from tests.memory_store import MemoryPersonStateStore


class FakeParking:
    def __init__(self) -> None:
        self.parks: list[tuple[int, bool]] = []

    def active_run(self, integration_id: str) -> str:
        return "run-1"

    def park(self, integration_id: str, key: int, run_id: str, *, deleted: bool = False) -> bool:
        self.parks.append((key, deleted))
        return True


def change(op: str) -> ContactChange:
    return ContactChange(integration_id="acme", person_key=5, operation=op, date="2026-01-01T10:00:00.000Z")


def test_a_delete_after_an_update_of_the_same_person_is_parked_as_a_delete() -> None:
    parking = FakeParking()
    never: Any = lambda *a: (_ for _ in ()).throw(AssertionError("nothing is fetched while parked"))  # noqa: E731
    worker = BatchWorker(never, never, never, MemoryPersonStateStore(), parking=parking)  # type: ignore[arg-type]
    batch = worker.prefetch([change("Update"), change("Delete")])
    assert batch.apply(change("Update")).result == "parked"
    assert batch.apply(change("Delete")).result == "parked"
    assert (5, True) in parking.parks, parking.parks  # the run's parked_deletes must count it
