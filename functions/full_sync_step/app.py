"""Full-sync steps called by the state machine: {"step": "begin" | "plan" | "seams" | "imports" | "tags" |
"removal_gate" | "halt" | "release_removals" | "finish" | "fail", ...}, each parsed once into its model
(efficy_sync/fullsync/steps.py) and dispatched by the table below (the removal steps:
efficy_sync/fullsync/breaker.py; imports: efficy_sync/fullsync/import_step.py).

Begin raises `SyncAlreadyRunning` (the state machine matches that class name) when another execution holds
the integration's lock, and `InvalidSyncInput` (naming the problem) for an input without a usable
`integration_id`; a step event the state machine would never send fails with `InvalidStepInput`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from efficy_sync import gc_policy
from efficy_sync.aws import transient_aws_error
from efficy_sync.clients.errors import TransientError, retry_as
from efficy_sync.clients.http import deadline, lambda_seconds
from efficy_sync.fullsync.breaker import Breaker
from efficy_sync.fullsync.import_step import imports_step
from efficy_sync.fullsync.runs import SyncAlreadyRunning
from efficy_sync.fullsync.steps import parse_step
from efficy_sync.fullsync.wiring import build_full_sync
from efficy_sync.observability import logger, metrics
from efficy_sync.settings import settings
from efficy_sync.tracing import capture_handler, record
from pydantic import BaseModel

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

full_sync = build_full_sync()
breaker = Breaker.of(full_sync)

__all__ = ["SyncAlreadyRunning", "handler"]

#: step name -> (the parsed step event, the seconds this invocation has left) -> the step's answer
STEPS: dict[str, Callable[[Any, Callable[[], float]], Any]] = {
    "begin": lambda ev, left: full_sync.begin(ev.input, ev.execution_arn),
    "plan": lambda ev, left: full_sync.plan(ev.run),
    "seams": lambda ev, left: full_sync.seams(ev.run, previous=ev.previous, time_left=left),
    "imports": lambda ev, left: imports_step(full_sync, ev.run.model_dump(), previous=ev.previous, time_left=left),
    "tags": lambda ev, left: full_sync.tags(ev.run, previous=ev.previous, time_left=left),
    "removal_gate": lambda ev, left: breaker.gate(ev.run, ev.tags),
    "halt": lambda ev, left: breaker.halt(ev.run, ev.tags),
    "release_removals": lambda ev, left: breaker.release(
        ev.run, previous=ev.previous, time_left=left, tags_result=ev.tags
    ),
    "finish": lambda ev, left: full_sync.finish(ev.run, tags=ev.tags),
    "fail": lambda ev, left: full_sync.fail(ev.run, ev.error),
}


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    step = parse_step(event)
    run = getattr(step, "run", None)
    sync_input = getattr(step, "input", None)  # Begin's input is whatever the admin started with: Begin checks it
    logger.append_keys(
        step=step.step,
        integration_id=run.integration_id
        if run
        else (sync_input.get("integration_id") if isinstance(sync_input, dict) else None),
        run_id=run.run_id if run else None,
    )
    # A full sync's correlation id is its run id, which every step payload carries (Begin's is in its result).
    # Every API call of a step ends before Lambda's timeout (as in the other workers): cut off, an Imports step
    # never marked what an import it had sent may have applied, and Step Functions' retry was cut off the same way.
    with deadline(lambda_seconds(context, settings().deadline_reserve)), record(run.run_id if run else None, "## step"):
        try:
            answer = STEPS[step.step](step, lambda: context.get_remaining_time_in_millis() / 1000)
        except TransientError as exc:
            raise retry_as(exc) from exc
        except Exception as exc:
            if transient_aws_error(exc):  # a throttled table, an S3 5xx: retried by the state machine
                raise TransientError(f"AWS {type(exc).__name__}: {exc}"[:300]) from exc
            raise  # a class the Retry does not name would fail the run instead
    result: dict[str, Any] = answer.model_dump() if isinstance(answer, BaseModel) else answer
    logger.info("full-sync step done", extra={"result": {k: v for k, v in result.items() if not isinstance(v, dict)}})
    return result
