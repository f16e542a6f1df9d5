"""Distributed Map worker: syncs one page of persons ({"integration_id", "run_id", "dry_run", "page"}: a
fullsync.steps.PageItem, parsed once here).

Retryable API errors propagate with their class name (TransientError, EfficyUnavailable, ApsisUnavailable,
RateLimited), so the state machine retries the page with backoff; each failed attempt is recorded on the run.
"""

from __future__ import annotations

from typing import Any

from efficy_sync import gc_policy
from efficy_sync.aws import transient_aws_error
from efficy_sync.clients.errors import TransientError, retry_as
from efficy_sync.clients.http import deadline, lambda_seconds
from efficy_sync.fullsync.steps import parse_page
from efficy_sync.fullsync.wiring import build_full_sync
from efficy_sync.observability import count, logger, metrics
from efficy_sync.settings import settings
from efficy_sync.tracing import capture_handler, record

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

full_sync = build_full_sync()


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    item = parse_page(event)
    logger.append_keys(integration_id=item.integration_id, run_id=item.run_id, page=item.number)
    # Calls that could not end before the Lambda's timeout are not made: the page fails in time (OutOfTime)
    # and Step Functions runs it again; persons already done cost nothing the second time.
    # The run id is the full sync's correlation id: on the page's log lines, trace and stored outcomes.
    with deadline(lambda_seconds(context, settings().deadline_reserve)), record(item.run_id, "## page"):
        try:
            summary = full_sync.page(item)
        except TransientError as exc:
            raise retry_as(exc) from exc
        except Exception as exc:
            if transient_aws_error(exc):  # a throttled table, an S3 5xx: retried by the state machine
                raise TransientError(f"AWS {type(exc).__name__}: {exc}"[:300]) from exc
            raise
    for name, metric in (
        ("synced", "PersonsSynced"),
        ("skipped", "PersonsSkipped"),
        ("failed", "PersonsFailed"),
        ("conflicting", "EfficyConflictingRecords"),  # the report's efficy_conflicting_records
    ):
        if summary.get(name):
            count(metric, summary[name], integration_id=item.integration_id)
    logger.info("page done", extra={"summary": summary})
    return summary
