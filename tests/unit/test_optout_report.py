"""writeback_batch.report: OptOutPersonMissing (alarmed) means nobody could be found for an opt-out whose key's
contact is gone; when the address found the holders, the opt-out was handled and nothing should page."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync import writeback_batch
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBackResult
from efficy_sync.optout_intake import Slot

NEWS = "usercreated.topics.newsletter-ab12"


class RecordedMetrics:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.names.append(name)


@pytest.mark.parametrize(("found_by_address", "alarmed"), [(1, False), (0, True)])
def test_person_missing_is_counted_only_when_nobody_was_found(
    monkeypatch: pytest.MonkeyPatch, found_by_address: int, alarmed: bool
) -> None:
    metrics = RecordedMetrics()
    monkeypatch.setattr(writeback_batch, "metrics", metrics)
    message = OptOutMessage(
        integration_id="acme", event="email.unsubscribe", profile_key=1, email="a@acme.example",
        slots=[SlotRef(topic=NEWS, channel="email")], occurred_at="2024-05-01T10:00:00.000Z",
    )  # fmt: skip
    persons = [1, 3] if found_by_address else [1]
    result = WriteBackResult(
        persons, "profile_key", [Slot(NEWS, "email", 12)], missing=[1], by_address_after_key=found_by_address
    )
    writeback_batch.report(message, result)
    assert ("OptOutPersonMissing" in metrics.names) is alarmed
