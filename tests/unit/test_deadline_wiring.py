"""Issue 11.6: each worker Lambda bounds its API calls by its own remaining time (less a reserve), so a batch
ends in time and reports what it could not do instead of being cut off by Lambda's timeout.

The deadline itself is tested against the simulators (tests/integration/test_client_safety.py); here, that every
worker handler sets it from Lambda's context for everything it calls."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from efficy_sync import aws
from efficy_sync.clients.http import time_left

ROOT = Path(__file__).resolve().parents[2]
RESERVE = 7.0


@dataclass
class Context:
    remaining_ms: int
    function_name: str = "f"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:f"
    aws_request_id: str = "r"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Any:
    from efficy_sync.settings import settings

    for name, value in {
        "CONFIG_TABLE": "config",
        "STATE_TABLE": "state",
        "CONTACT_QUEUE_URL": "https://sqs.example/changes",
        "OPTOUT_QUEUE_URL": "https://sqs.example/optouts",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "EFFICY_SYNC_DEADLINE_RESERVE": str(RESERVE),
        # a unit test's AWS call (a failed message's retry delay) is refused on this machine, never sent to AWS
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    aws.reset_clients()

    def loader(function: str) -> Any:
        spec = importlib.util.spec_from_file_location(f"{function}_app", ROOT / "functions" / function / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        return module

    yield loader
    settings.cache_clear()
    aws.reset_clients()


def test_the_real_time_worker_bounds_its_calls_by_the_lambda_time(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = load("apply_changes")
    seen: list[float | None] = []

    def prefetch(changes: list[Any]) -> Any:
        seen.append(time_left())
        return app.Batch({})

    def process(event: dict, record_handler: Any, processor: Any, context: Any) -> dict:
        seen.append(time_left())
        return {"batchItemFailures": []}

    monkeypatch.setattr(app.worker, "prefetch", prefetch)
    monkeypatch.setattr(app, "process_partial_response", process)
    app.handler({"Records": []}, Context(remaining_ms=40_000))
    assert len(seen) == 2  # the refetch and every record
    assert all(left is not None and 40 - RESERVE - 1 < left <= 40 - RESERVE for left in seen)
    assert time_left() is None  # only for the invocation


def test_the_write_back_bounds_its_calls_by_the_lambda_time(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = load("write_back")
    seen: list[float | None] = []

    def process(event: dict, record_handler: Any, processor: Any, context: Any) -> dict:
        seen.append(time_left())
        return {"batchItemFailures": []}

    monkeypatch.setattr(app, "process_partial_response", process)
    app.handler({"Records": []}, Context(remaining_ms=20_000))
    assert seen[0] is not None and 20 - RESERVE - 1 < seen[0] <= 20 - RESERVE


def test_the_page_worker_bounds_its_calls_and_a_page_out_of_time_is_retried(
    load: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efficy_sync.clients.errors import STATE_MACHINE_RETRIES, OutOfTime, TransientError

    app = load("sync_page")
    seen: list[float | None] = []

    def page(event: dict) -> dict:
        seen.append(time_left())
        raise OutOfTime("not started")

    monkeypatch.setattr(app.full_sync, "page", page)
    with pytest.raises(TransientError) as caught:
        app.handler({"integration_id": "acme", "run_id": "r", "page": {"page": 1}}, Context(remaining_ms=300_000))
    # Step Functions retries by class name: the page's error is one the state machine's Retry names
    # (tests/unit/test_asl_retries.py holds the ASL to that list)
    assert type(caught.value).__name__ in STATE_MACHINE_RETRIES
    assert seen[0] is not None and 300 - RESERVE - 1 < seen[0] <= 300 - RESERVE


@pytest.mark.parametrize("step", ["imports", "seams", "tags"])
def test_the_full_sync_steps_bound_their_calls_by_the_lambda_time(
    load: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Seams, Imports and Tags call Efficy and APSIS One for minutes: without a deadline, Lambda's timeout cut
    an Imports step off before it marked the rows an import it had sent may have applied."""
    import json

    app = load("full_sync_step")
    seen: list[float | None] = []

    def fake(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(time_left())  # what an APSIS or Efficy call of the step sees (check_time)
        return {"more": False}

    monkeypatch.setattr(app, "imports_step", fake)
    monkeypatch.setattr(app.full_sync, "seams", fake)
    monkeypatch.setattr(app.full_sync, "tags", fake)
    event = json.loads((ROOT / "events" / "full_sync_step_seams.json").read_text())
    event["step"] = step
    app.handler(event, Context(remaining_ms=900_000))
    assert seen and seen[0] is not None and 900 - RESERVE - 1 < seen[0] <= 900 - RESERVE
    assert time_left() is None


def test_the_sweep_bounds_its_calls_by_the_lambda_time(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep mirrors scheduled query tags (Efficy queries, APSIS tag calls): without a deadline one slow
    answer had Lambda's timeout cut off the integrations after it, on every sweep."""
    app = load("cleanup")
    seen: list[float | None] = []

    def fake_sweep(full_sync: Any, time_left: Any = None) -> dict[str, Any]:
        seen.append(time_left_now())
        return {"ended": [], "requeued": 0, "query_tags": {}}

    time_left_now = time_left
    monkeypatch.setattr(app, "sweep", fake_sweep)
    app.handler({"sweep": True}, Context(remaining_ms=240_000))
    assert seen and seen[0] is not None and 240 - RESERVE - 1 < seen[0] <= 240 - RESERVE
    assert time_left() is None


def _throttled() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "UpdateItem",
    )


def test_a_page_whose_state_table_stays_throttled_is_retried_not_failed(
    load: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DynamoDB throttle (after boto3's own retries) raised as botocore's ClientError, a class no Retry names:
    the page failed at once, and in a step (Tags, Finish...) the whole run. It is a TransientError now."""
    from botocore.exceptions import ClientError
    from efficy_sync.clients.errors import STATE_MACHINE_RETRIES

    app = load("sync_page")

    def page(event: Any) -> dict:
        raise _throttled()

    monkeypatch.setattr(app.full_sync, "page", page)
    event = {"integration_id": "acme", "run_id": "r", "page": {"page": 1}}
    with pytest.raises(Exception) as caught:
        app.handler(event, Context(remaining_ms=300_000))
    assert type(caught.value).__name__ in STATE_MACHINE_RETRIES, type(caught.value)

    def refused(event: Any) -> dict:  # not transient: a bug or a config error, raised as it is
        raise ClientError({"Error": {"Code": "ValidationException"}, "ResponseMetadata": {}}, "UpdateItem")

    monkeypatch.setattr(app.full_sync, "page", refused)
    with pytest.raises(ClientError):
        app.handler(event, Context(remaining_ms=300_000))


def test_a_step_whose_state_table_stays_throttled_is_retried(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from efficy_sync.clients.errors import STATE_MACHINE_RETRIES

    app = load("full_sync_step")

    def tags(*args: Any, **kwargs: Any) -> dict:
        raise _throttled()

    monkeypatch.setattr(app.full_sync, "tags", tags)
    event = json.loads((ROOT / "events" / "full_sync_step_seams.json").read_text())
    event["step"] = "tags"
    with pytest.raises(Exception) as caught:
        app.handler(event, Context(remaining_ms=900_000))
    assert type(caught.value).__name__ in STATE_MACHINE_RETRIES, type(caught.value)


def test_network_errors_of_the_aws_sdk_are_transient() -> None:
    from botocore.exceptions import EndpointConnectionError
    from efficy_sync.aws import transient_aws_error

    assert transient_aws_error(EndpointConnectionError(endpoint_url="https://dynamodb.example"))
    assert not transient_aws_error(ValueError("not AWS"))
