"""Issue 11.9: only "the run has ended" makes a park give up; a conflict on the run's shared counter is retried.

moto (in-process) runs the transaction and, for the lock's failed condition, answers with CancellationReasons
as DynamoDB does (checked below). moto never produces a TransactionConflict, so those are injected with the
real botocore exception class and DynamoDB's documented error shape, in front of moto's own client.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest
from efficy_sync import aws
from efficy_sync.fullsync import parking
from efficy_sync.fullsync.parking import ParkingContended, ParkingLot, run_has_ended
from efficy_sync.fullsync.runs import RunStore
from efficy_sync.store import parking as store_parking

from tests.integration.test_fullsync_runs import ARN, TABLE, aws_env, begin  # noqa: F401


def cancellation(codes: list[str]) -> dict[str, Any]:
    """DynamoDB's answer to a cancelled TransactWriteItems: one reason per item, in the items' order."""
    reasons = [{"Code": code, **({"Message": "m"} if code != "None" else {})} for code in codes]
    return {
        "Error": {"Code": "TransactionCanceledException", "Message": f"Transaction cancelled [{', '.join(codes)}]"},
        "CancellationReasons": reasons,
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


class Conflicting:
    """The DynamoDB client, whose first `n` TransactWriteItems are cancelled with `codes`."""

    def __init__(self, real: Any, n: int, codes: list[str]) -> None:
        self._real, self.left, self.codes, self.calls = real, n, codes, 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self._real.exceptions.TransactionCanceledException(cancellation(self.codes), "TransactWriteItems")
        return self._real.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parking.time, "sleep", lambda _s: None)


def conflicting(monkeypatch: pytest.MonkeyPatch, n: int, codes: list[str]) -> Conflicting:
    wrapper = Conflicting(aws.client("dynamodb"), n, codes)
    monkeypatch.setattr(
        store_parking, "client", lambda service: wrapper if service == "dynamodb" else aws.client(service)
    )
    return wrapper


def test_moto_names_the_lock_condition_as_the_reason_and_that_alone_means_the_run_ended(aws_env) -> None:
    store = RunStore(TABLE)
    lot = ParkingLot(TABLE, store)
    run = begin(store, ARN + "one")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        store_parking.ParkedKeys(TABLE)._transact("acme", 9, "some-other-run", False)
    assert caught.value.response["CancellationReasons"][0]["Code"] == "ConditionalCheckFailed"
    assert run_has_ended(caught.value.response) is True
    assert not lot.park("acme", 9, "some-other-run")
    assert lot.park("acme", 9, run.run_id)


@pytest.mark.parametrize(
    ("codes", "ended"),
    [
        (["ConditionalCheckFailed", "None", "None"], True),
        (["None", "None", "TransactionConflict"], False),
        (["None", "TransactionConflict", "None"], False),
        (["None", "ConditionalCheckFailed", "None"], False),  # a condition on another item: not the run's end
        (["None", "None", "ThrottlingError"], False),
    ],
)
def test_only_the_lock_condition_means_the_run_has_ended(codes: list[str], ended: bool) -> None:
    assert run_has_ended(cancellation(codes)) is ended


def test_no_reasons_is_not_taken_for_the_run_end() -> None:
    assert run_has_ended({"Error": {"Code": "TransactionCanceledException"}}) is None


def test_a_conflict_on_the_run_counter_is_retried_and_the_change_parked(
    aws_env,
    monkeypatch: pytest.MonkeyPatch,
    no_sleep: None,
) -> None:
    store = RunStore(TABLE)
    lot = ParkingLot(TABLE, store)
    run = begin(store, ARN + "one")
    wrapper = conflicting(monkeypatch, 2, ["None", "None", "TransactionConflict"])
    assert lot.park("acme", 7, run.run_id)
    assert wrapper.calls == 3
    assert lot.count("acme") == 1
    assert store.get("acme", run.run_id).counters["parked_messages"] == 1


def test_a_conflict_that_never_ends_is_neither_parked_nor_taken_for_the_run_end(
    aws_env,
    monkeypatch: pytest.MonkeyPatch,
    no_sleep: None,
) -> None:
    store = RunStore(TABLE)
    lot = ParkingLot(TABLE, store)
    run = begin(store, ARN + "one")
    wrapper = conflicting(monkeypatch, 1_000, ["None", "None", "TransactionConflict"])
    with pytest.raises(ParkingContended):
        lot.park("acme", 7, run.run_id)
    assert wrapper.calls == parking.PARK_ATTEMPTS
    assert lot.count("acme") == 0
