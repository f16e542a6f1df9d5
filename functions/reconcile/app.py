"""Scheduled drift check (off by default): a sample of each integration's persons against APSIS One, counts
published as metrics (DriftMissing, DriftOrphaned, DriftAttributes, DriftConsents, DriftTags, per integration).

It only reads and reports; repairs stay a person's decision (`efficy-sync reconcile ID --fix`). The event is
the schedule's input: `{"sample": N}` and optionally `{"integration_ids": [...]}` (default: every integration).
"""

from __future__ import annotations

from typing import Any

from efficy_sync import gc_policy
from efficy_sync.clients.http import deadline, lambda_seconds
from efficy_sync.connections import apsis_client, efficy_client
from efficy_sync.observability import logger, metrics
from efficy_sync.reconcile_run import Reconciler, Scope, publish_drift_metrics
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.tracing import capture_handler

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

DEFAULT_SAMPLE = 500

# an applied version is seen at once (its number is read each time; the body only when it changed)
configs = ConfigStore(settings().config_table, check_version=True)
states = PersonStateStore(settings().state_table)


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics  # flushes the invocation's API-call counters (the drift metrics have their own provider)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sample = int(event.get("sample") or DEFAULT_SAMPLE)
    results: dict[str, Any] = {}
    with deadline(lambda_seconds(context, settings().deadline_reserve)):
        for integration_id in event.get("integration_ids") or configs.list_ids():
            results[integration_id] = _check(integration_id, sample)
    return results


def _check(integration_id: str, sample: int) -> dict[str, Any]:
    """One integration's drift count, published; an outage of one integration must not hide the others'."""
    try:
        cfg = configs.get(integration_id)
        report = Reconciler(cfg, efficy_client(cfg), apsis_client(cfg), states).run(Scope(sample=sample)).report
    except Exception:
        logger.exception("reconcile failed", extra={"integration_id": integration_id})
        return {"error": True}
    publish_drift_metrics(integration_id, report)
    result = {"counts": report.counts, "persons_checked": report.persons_checked}
    logger.info("drift counted", extra={"integration_id": integration_id, **result})
    return result
