"""`full-sync cancel` stops every execution that can still act. moto has no PENDING_REDRIVE (an execution an
admin redrove, about to run again), so Step Functions' answers are stubbed here (botocore's Stubber on a real
client): the decision is ours, the statuses are AWS's documented ones."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from efficy_sync_tools.commands import full_sync
from efficy_sync_tools.commands._aws import CliError

ARN = "arn:aws:states:eu-west-1:123456789012:execution:full-sync:acme-1"


@pytest.fixture
def sfn(monkeypatch: pytest.MonkeyPatch) -> Any:
    client = boto3.client(
        "stepfunctions", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    monkeypatch.setattr(full_sync, "_sfn", lambda: client)
    monkeypatch.setattr(full_sync, "caller_identity", lambda: "tester")
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def described(status: str) -> dict[str, Any]:
    return {
        "executionArn": ARN,
        "stateMachineArn": ARN.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0],
        "status": status,
        "startDate": "2026-12-01T00:00:00Z",
        "input": "{}",
    }


@pytest.mark.parametrize("status", ["RUNNING", "PENDING_REDRIVE", "SOME_NEW_STATUS"])
def test_an_execution_that_can_still_act_is_stopped(sfn: Any, status: str) -> None:
    sfn.add_response("describe_execution", described(status), {"executionArn": ARN})
    sfn.add_response("stop_execution", {"stopDate": "2026-12-01T00:01:00Z"})
    sfn.add_response("describe_execution", described("ABORTED"), {"executionArn": ARN})
    assert full_sync._stop(ARN) == (True, "ABORTED")


@pytest.mark.parametrize("status", ["FAILED", "TIMED_OUT", "SUCCEEDED", "ABORTED"])
def test_an_ended_execution_is_left_and_ends_its_run_as_it_ended(sfn: Any, status: str) -> None:
    sfn.add_response("describe_execution", described(status), {"executionArn": ARN})
    assert full_sync._stop(ARN) == (False, status)


def test_a_refused_stop_leaves_the_run_going(sfn: Any) -> None:
    sfn.add_response("describe_execution", described("PENDING_REDRIVE"), {"executionArn": ARN})
    sfn.add_client_error("stop_execution", service_error_code="ValidationException", http_status_code=400)
    with pytest.raises(CliError, match="refused to stop"):
        full_sync._stop(ARN)


def test_a_gone_execution_ends_its_run_as_cancelled(sfn: Any) -> None:
    sfn.add_client_error("describe_execution", service_error_code="ExecutionDoesNotExist", http_status_code=400)
    assert full_sync._stop(ARN) == (False, "ABORTED")
