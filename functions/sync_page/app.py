"""Distributed Map worker: syncs one page of persons ({"integration_id", "run_id", "dry_run", "page"}).

Retryable API errors propagate with their class name (TransientError, EfficyUnavailable, ApsisUnavailable,
RateLimited), so the state machine retries the page with backoff; each failed attempt is recorded on the run.
"""

from __future__ import annotations

from typing import Any

from efficy_sync.fullsync.lifecycle import FullSync
from efficy_sync.observability import count, logger, metrics

full_sync = FullSync.from_settings()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    logger.append_keys(
        integration_id=event.get("integration_id"),
        run_id=event.get("run_id"),
        page=(event.get("page") or {}).get("page"),
    )
    summary = full_sync.page(event)
    for name, metric in (("synced", "PersonsSynced"), ("skipped", "PersonsSkipped"), ("failed", "PersonsFailed")):
        if summary.get(name):
            count(metric, summary[name], integration_id=event.get("integration_id"))
    logger.info("page done", extra={"summary": summary})
    return summary
