"""The full-sync step events (fullsync/steps.py) against what the state machine really sends.

Every Task state of statemachines/full_sync.asl.json that invokes the step Lambda must parse into its model
(so a renamed field fails here, not in a deployed execution), and a payload the state machine would never send
fails with a message naming the step and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from efficy_sync.fullsync.steps import (
    STEP_NAMES,
    BeginStep,
    FailStep,
    InvalidStepInput,
    PageItem,
    ResumedStep,
    RunRef,
    parse_page,
    parse_step,
)

ROOT = Path(__file__).resolve().parents[2]
ASL = json.loads((ROOT / "statemachines" / "full_sync.asl.json").read_text())
RUN = {
    "run_id": "20260101T100000Z-3f6c2d1e",
    "integration_id": "demo",
    "dry_run": False,
    "execution_arn": "arn:aws:states:eu-west-1:123456789012:execution:full-sync:x",
    "config_version": 3,
    "write_mode": "import",
    "max_concurrency": 4,
}
#: a value of the shape each JSONPath of a step payload yields at run time
VALUES: dict[str, Any] = {
    "input": {"integration_id": "demo", "dry_run": False},
    "execution_arn": RUN["execution_arn"],
    "run": RUN,
    "previous": {},
    "tags": {"queries": 1, "tagged": 2, "untagged": 0, "more": False},
    "plan": {"bucket": "b", "key": "plans/demo/x.json", "pages": 2},
    "pages": {"map_run_arn": "arn:map", "results": {"Bucket": "b", "Key": "k"}},
    "error": {"Error": "States.TaskFailed", "Cause": "boom"},
}


def _step_payloads() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, state in ASL["States"].items():
        params = state.get("Parameters") or {}
        if state.get("Type") == "Task" and params.get("FunctionName") == "${FullSyncStepFunctionArn}":
            found.append((name, params["Payload"]))
    return found


@pytest.mark.parametrize(("state", "payload"), _step_payloads(), ids=[name for name, _ in _step_payloads()])
def test_every_step_the_state_machine_sends_parses(state: str, payload: dict[str, Any]) -> None:
    event = {
        key.removesuffix(".$"): (value if not key.endswith(".$") else VALUES[key[:-2]])
        for key, value in payload.items()
    }
    parsed = parse_step(event)
    assert parsed.step == payload["step"]
    assert set(type(parsed).model_fields) >= set(event)
    if "run" in event:
        assert parsed.run == RunRef(**RUN)  # type: ignore[union-attr]


def test_every_step_name_is_sent_by_the_state_machine() -> None:
    assert sorted(STEP_NAMES) == sorted({payload["step"] for _, payload in _step_payloads()})


def test_the_run_object_passes_through_with_fields_it_does_not_name() -> None:
    parsed = parse_step({"step": "seams", "run": {**RUN, "added_later": 1}, "previous": {"next": 3, "shift": 2}})
    assert isinstance(parsed, ResumedStep)
    assert parsed.run.model_dump()["added_later"] == 1
    assert parsed.previous == {"next": 3, "shift": 2}


def test_begin_keeps_the_admins_input_for_its_own_checks() -> None:
    """Begin's `input` is whatever an admin started the execution with: read_sync_input names its problems."""
    parsed = parse_step({"step": "begin", "input": "not an object", "execution_arn": "arn:x"})
    assert isinstance(parsed, BeginStep) and parsed.input == "not an object"


def test_a_fail_step_without_an_error_reads_as_unknown() -> None:
    parsed = parse_step({"step": "fail", "run": RUN, "execution_arn": "arn:x"})
    assert isinstance(parsed, FailStep) and parsed.error.Error == "Unknown"


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"step": "plan", "run": {"integration_id": "demo"}}, "plan step input: run.run_id: Field required"),
        ({"step": "tags", "run": {**RUN, "dry_run": "maybe"}}, "run.dry_run"),
        ({"step": "finish", "run": RUN, "tgas": {}}, "tgas: Extra inputs are not permitted"),
        ({"step": "begin", "input": {}}, "execution_arn: Field required"),
        ({"step": "sweep", "run": RUN}, "step must be one of begin, plan, seams"),
        ({"run": RUN}, "step must be one of"),
        ("plan", "step must be one of"),
    ],
)
def test_a_bad_step_input_is_a_clear_validation_error(event: Any, named: str) -> None:
    with pytest.raises(InvalidStepInput) as raised:
        parse_step(event)
    assert named in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_page_item_is_what_the_distributed_map_sends() -> None:
    selector = ASL["States"]["Pages"]["ItemSelector"]
    values = {"integration_id": "demo", "run_id": RUN["run_id"], "dry_run": False, "page": {"page": 4, "skip": 2000}}
    item = parse_page({key.removesuffix(".$"): values[key.removesuffix(".$")] for key in selector})
    assert isinstance(item, PageItem) and item.number == 4 and item.page["skip"] == 2000
    sample = json.loads((ROOT / "events" / "sync_page.json").read_text())
    assert parse_page(sample).number == sample["page"]["page"]


@pytest.mark.parametrize(
    ("event", "named"),
    [
        (
            {"integration_id": "demo", "run_id": "r", "page": {"skip": 0}},
            "page: Value error, must hold its page number",
        ),
        ({"integration_id": "demo", "page": {"page": 1}}, "run_id: Field required"),
    ],
)
def test_a_bad_page_item_is_a_clear_validation_error(event: Any, named: str) -> None:
    with pytest.raises(InvalidStepInput) as raised:
        parse_page(event)
    assert named in str(raised.value)
