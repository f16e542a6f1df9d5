"""Runs the real statemachines/full_sync.asl.json in moto's Step Functions interpreter.

The Lambda tasks are routed to tiny in-test stubs (moto's ``LambdaSimpleBackend.invoke`` is the seam, see
contracts/aws-local.md), so these tests pin the workflow's control flow -- retries, catches, the lock refusal,
the Distributed Map fed from S3 -- independently of the real handlers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import moto.stepfunctions.parser.asl.component.common.retry.retrier_decl as retrier_decl
import pytest
from efficy_sync.clients.errors import ApsisUnavailable, EfficyUnavailable, RateLimited, TransientError
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

ASL_PATH = Path(__file__).resolve().parents[2] / "statemachines" / "full_sync.asl.json"
REGION = "eu-west-1"
BUCKET = "efficy-sync-test-pages"
STEP_FUNCTION = "full-sync-step"
PAGE_FUNCTION = "sync-page"
EXECUTION_TIMEOUT_S = 15.0
#: the blast-radius breaker's steps between Tags and Finish when the gate lets the removals go
RELEASE = ("removal_gate", "release_removals")

pytestmark = pytest.mark.timeout(60)


class SyncAlreadyRunning(Exception):
    """Same class name as the handler's: Step Functions matches the Lambda errorType by name."""


class StepBroken(Exception):
    pass


@dataclass
class Scenario:
    """What the stub handlers do in one execution."""

    pages: int = 3
    begin_error: type[Exception] | None = None
    failing_step: str | None = None  # "plan" | "tags" | "finish": that step raises StepBroken
    flaky_pages: dict[int, tuple[type[Exception], int]] = field(default_factory=dict)  # page -> (error, times)
    page_delay_s: float = 0.0
    max_concurrency: int = 5  # what Begin puts in the run (the integration's full_sync.max_concurrency)
    tags_calls: int = 1  # the Tags step answers more=true until it has been called this many times
    imports_calls: int = 1  # likewise for the Imports step (import mode's collector)
    seam_windows: int = 0  # the Seams step does two windows per call
    halt: bool = False  # the RemovalGate step answers halt=true (the blast-radius breaker)
    release_calls: int = 1  # the ReleaseRemovals step answers more=true until called this many times


@dataclass
class Harness:
    sfn: Any
    machine_arn: str
    scenario: Scenario = field(default_factory=Scenario)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retry_waits: list[float] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- stub handlers (run on the interpreter's threads) -------------------------------------------------------
    def step_handler(self, event: dict[str, Any]) -> dict[str, Any]:
        step = event["step"]
        with self.lock:
            self.calls.append((step, event))
        if step == "begin":
            if self.scenario.begin_error:
                raise self.scenario.begin_error("integration demo is locked by another execution")
            sync_input = event["input"]
            return {
                "run_id": "run-1",
                "integration_id": sync_input["integration_id"],
                "dry_run": sync_input.get("dry_run", False),
                "execution_arn": event["execution_arn"],
                "max_concurrency": self.scenario.max_concurrency,
            }
        if step == self.scenario.failing_step:
            raise StepBroken(f"{step} failed on purpose")
        if step == "plan":
            key = f"plans/{event['run']['run_id']}.json"
            descriptors = [
                {"page": n, "from_key": n * 500, "to_key": n * 500 + 499} for n in range(self.scenario.pages)
            ]
            boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=json.dumps(descriptors))
            return {"bucket": BUCKET, "key": key, "pages": len(descriptors)}
        if step == "seams":
            previous = event["previous"] or {"next": 0}
            windows = self.scenario.seam_windows
            done = min(windows, previous["next"] + 2)  # two windows per call, as if time ran out
            return {"shift": 1 if windows else 0, "windows": windows, "next": done, "more": done < windows}
        if step == "imports":
            calls = (event["previous"] or {"calls": 0})["calls"] + 1
            return {"files": 3, "next": calls, "calls": calls, "more": calls < self.scenario.imports_calls}
        if step == "tags":
            previous = event["previous"] or {"tagged": 0, "calls": 0}
            calls = previous["calls"] + 1
            return {
                "queries": 1,
                "tagged": previous["tagged"] + 2,
                "untagged": 0,
                "calls": calls,
                "more": calls < self.scenario.tags_calls,
            }
        if step == "removal_gate":
            return {"halt": self.scenario.halt, "would_halt": self.scenario.halt, "removals": 12}
        if step == "halt":
            return {"status": "halted", "run_id": event["run"]["run_id"]}
        if step == "release_removals":
            calls = (event["previous"] or {}).get("calls", 0) + 1
            return {"released": calls * 50, "calls": calls, "more": calls < self.scenario.release_calls}
        if step == "finish":
            return {"status": "succeeded", "run_id": event["run"]["run_id"]}
        return {"status": "failed"}

    def page_handler(self, event: dict[str, Any]) -> dict[str, Any]:
        page = event["page"]["page"]
        with self.lock:
            self.calls.append(("page", event))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            flaky = self.scenario.flaky_pages.get(page)
            fail_now = flaky is not None and flaky[1] > 0
            if fail_now:
                self.scenario.flaky_pages[page] = (flaky[0], flaky[1] - 1)
        try:
            time.sleep(self.scenario.page_delay_s)
            if fail_now:
                raise flaky[0](f"page {page} hit a transient error")
            return {"page": page, "synced": 10, "skipped": 0, "failed": 0}
        finally:
            with self.lock:
                self.in_flight -= 1

    # -- helpers for the tests ----------------------------------------------------------------------------------
    def run(self, execution_input: dict[str, Any]) -> dict[str, Any]:
        arn = self.sfn.start_execution(
            stateMachineArn=self.machine_arn, name=uuid.uuid4().hex, input=json.dumps(execution_input)
        )["executionArn"]
        deadline = time.monotonic() + EXECUTION_TIMEOUT_S
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise AssertionError(f"execution still RUNNING after {EXECUTION_TIMEOUT_S}s; calls so far: {self.steps()}")

    def steps(self) -> list[str]:
        return [name for name, _ in self.calls if name != "page"]

    def page_events(self) -> list[dict[str, Any]]:
        return [event for name, event in self.calls if name == "page"]

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        return self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def _router(handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> Callable[..., bytes]:
    def fake_invoke(self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any):
        name = function_name.split(":function:")[-1].split(":")[0]
        try:
            return json.dumps(handlers[name](json.loads(body or "{}"))).encode()
        except Exception as exc:  # becomes a Lambda FunctionError: Retry/Catch match the class name
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()

    return fake_invoke


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="full-sync-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        arns = {
            name: lam.create_function(
                FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": b"x"}
            )["FunctionArn"]
            for name in (STEP_FUNCTION, PAGE_FUNCTION)
        }
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        definition = ASL_PATH.read_text()
        for placeholder, value in {
            "FullSyncStepFunctionArn": arns[STEP_FUNCTION],
            "SyncPageFunctionArn": arns[PAGE_FUNCTION],
            "PagesBucket": BUCKET,
        }.items():
            definition = definition.replace("${" + placeholder + "}", value)
        assert "${" not in definition
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machine_arn = sfn.create_state_machine(name="full-sync", definition=definition, roleArn=role)["stateMachineArn"]
        h = Harness(sfn=sfn, machine_arn=machine_arn)
        fake_time = mock.Mock(sleep=h.retry_waits.append)  # retries would really sleep (aws-local.md §4a)
        with (
            mock.patch.object(
                LambdaSimpleBackend, "invoke", _router({STEP_FUNCTION: h.step_handler, PAGE_FUNCTION: h.page_handler})
            ),
            mock.patch.object(retrier_decl, "time", fake_time),
        ):
            yield h


def test_happy_path_visits_every_page_once_and_ends_with_finish(harness: Harness) -> None:
    harness.scenario = Scenario(pages=7)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"status": "succeeded", "run_id": "run-1"}
    assert harness.steps() == ["begin", "plan", "seams", "imports", "tags", *RELEASE, "finish"]
    pages = sorted(event["page"]["page"] for event in harness.page_events())
    assert pages == list(range(7))
    for event in harness.page_events():
        assert event["integration_id"] == "demo"
        assert event["run_id"] == "run-1"
        assert event["dry_run"] is False
        assert set(event["page"]) == {"page", "from_key", "to_key"}
    assert harness.retry_waits == []


def test_steps_receive_the_run_and_finish_gets_a_small_map_summary(harness: Harness) -> None:
    harness.scenario = Scenario(pages=4)

    result = harness.run({"integration_id": "demo", "dry_run": True})

    assert result["status"] == "SUCCEEDED", result
    events = dict(harness.calls)
    begin = events["begin"]
    assert begin["input"] == {"integration_id": "demo", "dry_run": True}
    assert begin["execution_arn"] == result["executionArn"]
    expected_run = {
        "run_id": "run-1",
        "integration_id": "demo",
        "dry_run": True,
        "execution_arn": result["executionArn"],
        "max_concurrency": 5,
    }
    for step in ("plan", "tags", "finish"):
        assert events[step]["run"] == expected_run
    assert all(event["dry_run"] is True for event in harness.page_events())
    finish = events["finish"]
    assert finish["plan"] == {"bucket": BUCKET, "key": "plans/run-1.json", "pages": 4}
    assert finish["tags"] == {"queries": 1, "tagged": 2, "untagged": 0, "calls": 1, "more": False}
    # Child results go to S3 through ResultWriter: the parent carries a pointer, not one entry per page.
    assert set(finish["pages"]) == {"map_run_arn", "results"}
    assert finish["pages"]["results"]["Bucket"] == BUCKET


def test_a_tags_step_that_runs_out_of_time_is_called_again_with_its_previous_result(harness: Harness) -> None:
    harness.scenario = Scenario(pages=2, tags_calls=3)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    assert harness.steps() == ["begin", "plan", "seams", "imports", "tags", "tags", "tags", *RELEASE, "finish"]
    tags_events = [event for step, event in harness.calls if step == "tags"]
    assert tags_events[0]["previous"] == {}
    assert tags_events[2]["previous"] == {"queries": 1, "tagged": 4, "untagged": 0, "calls": 2, "more": True}
    assert dict(harness.calls)["finish"]["tags"]["tagged"] == 6


def test_the_imports_step_is_called_again_until_every_file_is_sent(harness: Harness) -> None:
    harness.scenario = Scenario(pages=2, imports_calls=3)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    assert harness.steps() == ["begin", "plan", "seams", "imports", "imports", "imports", "tags", *RELEASE, "finish"]
    imports = [event["previous"] for step, event in harness.calls if step == "imports"]
    assert imports[0] == {} and [p["next"] for p in imports[1:]] == [1, 2]


def test_seams_are_called_until_every_window_is_done(harness: Harness) -> None:
    harness.scenario = Scenario(pages=3, seam_windows=5)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    assert harness.steps() == ["begin", "plan", "seams", "seams", "seams", "imports", "tags", *RELEASE, "finish"]
    seams = [event["previous"] for step, event in harness.calls if step == "seams"]
    assert seams[0] == {} and [s["next"] for s in seams[1:]] == [2, 4]


@pytest.mark.parametrize("error", [TransientError, EfficyUnavailable, ApsisUnavailable, RateLimited])
def test_a_page_that_fails_once_is_retried_and_the_sync_succeeds(harness: Harness, error: type[Exception]) -> None:
    harness.scenario = Scenario(pages=3, flaky_pages={1: (error, 1)})

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    visits = [event["page"]["page"] for event in harness.page_events()]
    assert sorted(visits) == [0, 1, 1, 2]
    assert len(harness.retry_waits) == 1
    assert "fail" not in harness.steps()


def test_second_start_is_refused_without_running_the_fail_step(harness: Harness) -> None:
    harness.scenario = Scenario(begin_error=SyncAlreadyRunning)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "FAILED"
    assert result["error"] == "SyncAlreadyRunning"
    assert "already running" in result["cause"]
    # The lock belongs to the other execution: nothing may release it or re-enqueue its parked changes.
    assert harness.steps() == ["begin"]
    assert harness.page_events() == []


@pytest.mark.parametrize(
    "failing_step", ["plan", "seams", "imports", "tags", "removal_gate", "release_removals", "finish"]
)
def test_a_failing_step_runs_the_fail_step_and_the_execution_fails(harness: Harness, failing_step: str) -> None:
    harness.scenario = Scenario(pages=2, failing_step=failing_step)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "FAILED"
    assert result["error"] == "StepBroken"  # the original error surfaces, not a generic one
    assert f"{failing_step} failed on purpose" in result["cause"]
    steps = harness.steps()
    assert steps[-1] == "fail"
    assert steps.count("fail") == 1
    assert (
        steps[:-1] == ["begin", "plan", "seams", "imports", "tags", *RELEASE, "finish"][: steps.index(failing_step) + 1]
    )
    fail_event = dict(harness.calls)["fail"]
    assert fail_event["error"]["Error"] == "StepBroken"
    assert fail_event["run"]["run_id"] == "run-1"
    assert fail_event["execution_arn"] == result["executionArn"]


def test_parent_history_does_not_grow_with_the_number_of_pages(harness: Harness) -> None:
    """The Distributed Map keeps every page's events in its child executions (25,000-event limit)."""
    sizes = {}
    for pages in (2, 30):
        harness.scenario = Scenario(pages=pages)
        result = harness.run({"integration_id": "demo"})
        assert result["status"] == "SUCCEEDED", result
        sizes[pages] = len(harness.history(result["executionArn"]))
    assert sizes[2] == sizes[30]


def test_page_concurrency_is_bounded_by_max_concurrency(harness: Harness) -> None:
    harness.scenario = Scenario(pages=15, page_delay_s=0.05, max_concurrency=3)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    assert len(harness.page_events()) == 15
    assert 1 < harness.peak_in_flight <= 3  # the integration's full_sync.max_concurrency, via Begin's run


def test_a_gate_that_halts_ends_the_run_halted_before_any_release_or_finish(harness: Harness) -> None:
    harness.scenario = Scenario(pages=2, halt=True)

    result = harness.run({"integration_id": "demo", "allow_removals": False})

    assert result["status"] == "SUCCEEDED", result  # the run's outcome is HALTED; the workflow did its job
    assert json.loads(result["output"]) == {"status": "halted", "run_id": "run-1"}
    assert harness.steps() == ["begin", "plan", "seams", "imports", "tags", "removal_gate", "halt"]
    events = dict(harness.calls)
    assert events["begin"]["input"]["allow_removals"] is False  # Begin receives (and validates) the allowance
    assert events["removal_gate"]["tags"]["tagged"] == 2  # the gate counts the untags the Tags step held
    assert events["halt"]["run"]["run_id"] == "run-1"


def test_held_removals_are_released_in_calls_until_done_and_then_finish(harness: Harness) -> None:
    harness.scenario = Scenario(pages=2, release_calls=3)

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "SUCCEEDED", result
    assert harness.steps() == [
        "begin",
        "plan",
        "seams",
        "imports",
        "tags",
        "removal_gate",
        "release_removals",
        "release_removals",
        "release_removals",
        "finish",
    ]
    releases = [event for step, event in harness.calls if step == "release_removals"]
    assert releases[0]["previous"] == {}
    assert releases[2]["previous"] == {"released": 100, "calls": 2, "more": True}
    assert all(event["tags"]["queries"] == 1 for event in releases)


def test_a_failing_halt_step_runs_the_fail_step(harness: Harness) -> None:
    harness.scenario = Scenario(pages=1, halt=True, failing_step="halt")

    result = harness.run({"integration_id": "demo"})

    assert result["status"] == "FAILED"
    assert harness.steps() == ["begin", "plan", "seams", "imports", "tags", "removal_gate", "halt", "fail"]
