"""Full-sync steps called by the state machine: {"step": "begin" | "plan" | "seams" | "imports" | "tags" |
"removal_gate" | "halt" | "release_removals" | "finish" | "fail", ...} (the removal steps:
efficy_sync/fullsync/breaker.py; imports: efficy_sync/fullsync/import_step.py).

Begin raises `SyncAlreadyRunning` (the state machine matches that class name) when another execution holds
the integration's lock, and `InvalidSyncInput` (naming the problem) for an input without a usable
`integration_id`; every other step receives the run object Begin returned.
"""

from __future__ import annotations

from typing import Any

from efficy_sync.fullsync.breaker import Breaker
from efficy_sync.fullsync.import_step import imports_step
from efficy_sync.fullsync.lifecycle import FullSync
from efficy_sync.fullsync.runs import SyncAlreadyRunning
from efficy_sync.observability import logger, metrics
from efficy_sync.tracing import capture_handler, record

full_sync = FullSync.from_settings()
breaker = Breaker.of(full_sync)

__all__ = ["SyncAlreadyRunning", "handler"]


def _step(event: dict[str, Any], context: Any) -> dict[str, Any]:
    step = event.get("step")
    if step == "begin":
        return full_sync.begin(event["input"], event["execution_arn"])
    if step == "plan":
        return full_sync.plan(event["run"])
    if step == "seams":
        return full_sync.seams(
            event["run"],
            previous=event.get("previous"),
            time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        )
    if step == "imports":
        return imports_step(
            full_sync,
            event["run"],
            previous=event.get("previous"),
            time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        )
    if step == "tags":
        return full_sync.tags(
            event["run"],
            previous=event.get("previous"),
            time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        )
    if step == "removal_gate":
        return breaker.gate(event["run"], event.get("tags"))
    if step == "halt":
        return breaker.halt(event["run"], event.get("tags"))
    if step == "release_removals":
        return breaker.release(
            event["run"],
            previous=event.get("previous"),
            time_left=lambda: context.get_remaining_time_in_millis() / 1000,
            tags_result=event.get("tags"),
        )
    if step == "finish":
        return full_sync.finish(event)
    if step == "fail":
        return full_sync.fail(event)
    raise ValueError(f"unknown full-sync step {step!r}")


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run = event.get("run") or {}
    sync_input = event.get("input")  # Begin's input is whatever the admin started with: Begin validates it
    logger.append_keys(
        step=event.get("step"),
        integration_id=run.get("integration_id")
        or (sync_input.get("integration_id") if isinstance(sync_input, dict) else None),
        run_id=run.get("run_id"),
    )
    # A full sync's correlation id is its run id, which every step payload carries (Begin's is in its result).
    with record(run.get("run_id"), "## step"):
        result = _step(event, context)
    logger.info("full-sync step done", extra={"result": {k: v for k, v in result.items() if not isinstance(v, dict)}})
    return result
