"""The write-back's batch bookkeeping (efficy_sync/writeback_batch.py), without AWS: a failed opt-out comes back
later and later; once Efficy proved unreachable, the batch's other opt-outs are recorded and put back at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from efficy_sync.clients.errors import EfficyUnavailable
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBackResult
from efficy_sync.redelivery import retry_delay
from efficy_sync.writeback_batch import WriteBackBatch


def message(key: int, integration_id: str = "acme") -> str:
    return OptOutMessage(
        integration_id=integration_id,
        event="email.unsubscribe",
        profile_key=key,
        slots=[SlotRef(topic="news", channel="email")],
        occurred_at="2024-05-01T10:00:00.000Z",
    ).model_dump_json()


@dataclass
class FakeWriteBack:
    """WriteBack as the batch drives it: `down` makes every process() fail like an unreachable Efficy."""

    down: bool = False
    processed: list[int] = field(default_factory=list)
    recorded_only: list[int] = field(default_factory=list)

    def process(self, msg: OptOutMessage) -> WriteBackResult:
        if self.down:
            raise EfficyUnavailable("Efficy answered 504")
        self.processed.append(int(msg.profile_key or 0))
        return WriteBackResult(persons=[int(msg.profile_key or 0)], matched_by="profile_key", slots=[])

    def record_only(self, msg: OptOutMessage) -> None:
        self.recorded_only.append(int(msg.profile_key or 0))


def batch_of(writeback: FakeWriteBack) -> tuple[WriteBackBatch, list[tuple[str, int]]]:
    delays: list[tuple[str, int]] = []
    batch = WriteBackBatch(lambda integration_id: writeback, lambda handle, seconds: delays.append((handle, seconds)))  # type: ignore[arg-type,return-value]
    return batch, delays


def test_an_opt_out_written_back_is_not_delayed() -> None:
    writeback = FakeWriteBack()
    batch, delays = batch_of(writeback)
    batch.write_back(message(7), "h-7", 1)
    assert writeback.processed == [7] and delays == []


def test_once_efficy_is_down_the_others_are_recorded_and_put_back_at_once() -> None:
    writeback = FakeWriteBack(down=True)
    batch, delays = batch_of(writeback)
    with pytest.raises(EfficyUnavailable):
        batch.write_back(message(7), "h-7", 1)
    writeback.down = False  # the next opt-out is not even tried against Efficy in this batch
    with pytest.raises(EfficyUnavailable, match="earlier in this batch"):
        batch.write_back(message(8), "h-8", 4)
    assert writeback.processed == [] and writeback.recorded_only == [8]  # recorded all the same
    assert delays == [("h-7", retry_delay(1)), ("h-8", retry_delay(4))]
    assert retry_delay(4) > retry_delay(1)


def test_a_poison_message_comes_back_without_its_body_in_the_log(caplog: Any) -> None:
    batch, delays = batch_of(FakeWriteBack())
    with pytest.raises(ValueError):
        batch.write_back('{"integration_id": "acme", "email": "jo@example.com"', "h-x", 2)
    assert delays == [("h-x", retry_delay(2))]
    assert "jo@example.com" not in caplog.text


def test_a_failed_delay_never_hides_the_failure() -> None:
    writeback = FakeWriteBack(down=True)

    def no_permission(handle: str, seconds: int) -> None:
        raise PermissionError("AccessDenied")

    batch = WriteBackBatch(lambda integration_id: writeback, no_permission)  # type: ignore[arg-type,return-value]
    with pytest.raises(EfficyUnavailable):
        batch.write_back(message(7), "h-7", 1)


def test_one_integrations_efficy_outage_leaves_another_integrations_opt_outs_alone() -> None:
    """The opt-out queue is shared by every integration: one flag for the batch put a healthy CRM's opt-outs back
    behind another customer's outage, further each time, until they dead-lettered."""
    acme, globex = FakeWriteBack(down=True), FakeWriteBack()
    by_id = {"acme": acme, "globex": globex}
    batch = WriteBackBatch(lambda integration_id: by_id[integration_id], lambda handle, seconds: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(EfficyUnavailable):
        batch.write_back(message(7), "h-7", 1)
    batch.write_back(message(8, "globex"), "h-8", 1)
    assert globex.processed == [8]
    with pytest.raises(EfficyUnavailable, match="earlier in this batch"):
        batch.write_back(message(9), "h-9", 1)  # acme's next one is still put back at once
    assert acme.recorded_only == [9]


def test_a_message_that_does_not_parse_is_not_logged_as_the_last_integrations() -> None:
    """The logger kept the integration_id of the message before: a broken one was logged as that integration's."""
    from efficy_sync.observability import logger

    writeback = FakeWriteBack()
    batch, _ = batch_of(writeback)
    batch.write_back(message(7, integration_id="acme"), "h-7", 1)
    assert logger.get_current_keys().get("integration_id") == "acme"
    with pytest.raises(ValueError):
        batch.write_back("{not json", "h-8", 1)
    assert "integration_id" not in logger.get_current_keys()


def test_a_failed_message_still_names_its_integration_for_the_invocation_s_api_counts() -> None:
    from efficy_sync.observability import integration_counts

    integration_counts.take({})
    batch, _ = batch_of(FakeWriteBack(down=True))
    with pytest.raises(EfficyUnavailable):
        batch.write_back(message(7, integration_id="acme"), "h-7", 1)
    batch_ok, _ = batch_of(FakeWriteBack())
    batch_ok.write_back(message(8, integration_id="globex"), "h-8", 1)
    counts = integration_counts.take({"ApsisCalls": 5})
    assert "ApsisCalls" not in counts.get("globex", {}), counts  # two integrations served: attributed to neither
