"""DynamoDB's "unprocessed" answers (throttling) on the store's batch helpers, on moto in process.

moto never throttles, so the shared client's BatchGetItem / BatchWriteItem are wrapped to leave part of each
request unprocessed, as DynamoDB does under load; everything else is moto's real answer.
BatchGetItem asked the unprocessed keys again at once, in a loop with no bound and no pause (a throttled
table was hit again at once by every page's chunk); it now backs off like the write helper, and a key still
unanswered after every attempt fails the read (never read as "no item"). Both helpers' give-up errors are
throttling: a page or step that raised them failed the full sync at once (no Retry names them).
"""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync import aws
from efficy_sync.store import dynamo
from efficy_sync.store.dynamo import BatchGetIncomplete, BatchWriteIncomplete, batch_get, batch_write, key, to_item

from tests.support import create_pk_sk_table
from tests.unit.test_deadline_wiring import Context, load  # noqa: F401 (load: a fixture)

TABLE = "state"


@pytest.fixture
def table(in_process_aws: str) -> str:
    create_pk_sk_table(TABLE, in_process_aws)
    return TABLE


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The helpers' backoff sleeps (their upper bound: the jitter is drawn below it), not slept."""
    bounds: list[float] = []
    monkeypatch.setattr(dynamo.random, "uniform", lambda low, high: high)
    monkeypatch.setattr(dynamo.time, "sleep", bounds.append)
    return bounds


def leave_unprocessed(monkeypatch: pytest.MonkeyPatch, operation: str, times: int = 0) -> list[int]:
    """The next `times` calls of `operation` send moto only the first half of the request and answer the rest
    as unprocessed (with no `times`, every call leaves all of it); returns the sizes of the requests made."""
    ddb = aws.client("dynamodb")
    real = getattr(ddb, operation)
    sizes: list[int] = []
    left = [times]

    def throttled(RequestItems: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ((name, asked),) = RequestItems.items()
        entries = asked["Keys"] if operation == "batch_get_item" else asked
        sizes.append(len(entries))
        if times and left[0] <= 0:
            return real(RequestItems=RequestItems, **kwargs)
        left[0] -= 1
        half = len(entries) // 2 if times else 0
        done, rest = entries[:half], entries[half:]
        if operation == "batch_get_item":
            answer = real(RequestItems={name: {**asked, "Keys": done}}, **kwargs) if done else {"Responses": {}}
            answer["UnprocessedKeys"] = {name: {**asked, "Keys": rest}} if rest else {}
        else:
            answer = real(RequestItems={name: done}, **kwargs) if done else {}
            answer["UnprocessedItems"] = {name: rest} if rest else {}
        return answer

    monkeypatch.setattr(ddb, operation, throttled)
    return sizes


def items(n: int) -> list[dict[str, Any]]:
    return [to_item({"pk": f"PERSON#acme#{k}", "sk": "STATE", "n": k}) for k in range(n)]


def test_unprocessed_keys_are_asked_again_after_a_growing_pause_and_all_are_read(
    table: str, pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_write(table, items(40))
    sizes = leave_unprocessed(monkeypatch, "batch_get_item", times=3)
    got = list(batch_get(table, [key(f"PERSON#acme#{k}", "STATE") for k in range(40)]))
    assert sorted(i["n"] for i in got) == list(range(40))
    assert sizes == [40, 20, 10, 5]  # only what was left unprocessed is asked again
    assert pauses == [0.05, 0.1, 0.2]  # a pause before each second ask, doubling (it was none)


def test_keys_still_unprocessed_after_every_attempt_fail_the_read(
    table: str, pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never "no item" for a key DynamoDB did not answer: the read fails, and it is throttling (retried)."""
    batch_write(table, items(4))
    leave_unprocessed(monkeypatch, "batch_get_item")  # nothing is ever processed
    with pytest.raises(BatchGetIncomplete, match="4 keys still unprocessed") as caught:
        list(batch_get(table, [key(f"PERSON#acme#{k}", "STATE") for k in range(4)], attempts=3))
    assert len(pauses) == 2 and aws.transient_aws_error(caught.value)


def test_items_still_unprocessed_after_every_attempt_fail_the_write_as_throttling(
    table: str, pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    leave_unprocessed(monkeypatch, "batch_write_item")
    with pytest.raises(BatchWriteIncomplete, match="3 items still unprocessed") as caught:
        batch_write(table, items(3), attempts=3)
    assert pauses == [0.05, 0.1]  # none after the last attempt
    assert aws.transient_aws_error(caught.value)


@pytest.mark.parametrize("error", [BatchGetIncomplete("2 keys"), BatchWriteIncomplete("2 items")])
def test_a_page_that_gave_up_on_unprocessed_items_is_retried_not_failed(
    error: Exception, load: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real sync_page handler: the state machine retries only the classes STATE_MACHINE_RETRIES names."""
    from efficy_sync.clients.errors import STATE_MACHINE_RETRIES

    app = load("sync_page")

    def page(event: Any) -> dict:
        raise error

    monkeypatch.setattr(app.full_sync, "page", page)
    with pytest.raises(Exception) as caught:
        app.handler({"integration_id": "acme", "run_id": "r", "page": {"page": 1}}, Context(remaining_ms=300_000))
    assert type(caught.value).__name__ in STATE_MACHINE_RETRIES, type(caught.value)
