"""Ends full-sync runs whose execution was aborted, timed out or failed, and sweeps what EventBridge missed.

Two inputs: the EventBridge "Step Functions Execution Status Change" event (matched to its run by execution
ARN), and the scheduled `{"sweep": true}` that reconciles every lock with DescribeExecution and re-enqueues
real-time changes parked while a run was ending.
"""

from __future__ import annotations

from typing import Any

from efficy_sync import gc_policy
from efficy_sync.clients.http import deadline, lambda_seconds
from efficy_sync.fullsync.sweep import sweep
from efficy_sync.fullsync.wiring import build_full_sync
from efficy_sync.observability import logger, metrics
from efficy_sync.settings import settings
from efficy_sync.tracing import capture_handler

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

full_sync = build_full_sync()


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("sweep"):
        # the scheduled query tags call Efficy and APSIS One: a slow answer ends in time (OutOfTime, caught per
        # integration by the sweep) instead of Lambda's timeout cutting off the integrations after it
        with deadline(lambda_seconds(context, settings().deadline_reserve)):
            result = sweep(full_sync, time_left=lambda: context.get_remaining_time_in_millis() / 1000)
        if result["ended"] or result["requeued"]:
            logger.info("sweep reconciled runs", extra=result)
        return result
    detail = event.get("detail") or {}
    arn, status = detail.get("executionArn"), detail.get("status")
    if not arn or not status:
        logger.warning("ignored an event that is neither a sweep nor an execution status change")
        return {"ignored": True}
    result = full_sync.execution_ended(arn, status)
    if result.get("matched"):
        logger.info("run ended by its execution's status", extra={"status": status, **result})
    return result
