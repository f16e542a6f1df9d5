"""Scheduled drift check (off by default): a sample of each integration's persons against APSIS One, counts
published as metrics (DriftMissing, DriftOrphaned, DriftAttributes, DriftConsents, DriftTags, per integration).

It only reads and reports; repairs stay a person's decision (`efficy-sync reconcile ID --fix`). The event is
the schedule's input: `{"sample": N}` and optionally `{"integration_ids": [...]}` (default: every integration).
"""

from __future__ import annotations

from typing import Any

from efficy_sync.connections import apsis_client, efficy_client
from efficy_sync.observability import logger
from efficy_sync.reconcile_run import Reconciler, Scope, publish_drift_metrics
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore

DEFAULT_SAMPLE = 500

configs = ConfigStore(settings().config_table, cache_seconds=settings().cache_seconds)
states = PersonStateStore(settings().state_table)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sample = int(event.get("sample") or DEFAULT_SAMPLE)
    results: dict[str, Any] = {}
    for integration_id in event.get("integration_ids") or configs.list_ids():
        try:
            cfg = configs.get(integration_id)
            reconciler = Reconciler(cfg, efficy_client(cfg), apsis_client(cfg), states)
            report = reconciler.run(Scope(sample=sample), resume=False).report
        except Exception:  # one integration's outage must not hide the others' drift
            logger.exception("reconcile failed", extra={"integration_id": integration_id})
            results[integration_id] = {"error": True}
            continue
        publish_drift_metrics(integration_id, report)
        results[integration_id] = {"counts": report.counts, "persons_checked": report.persons_checked}
        logger.info("drift counted", extra={"integration_id": integration_id, **results[integration_id]})
    return results
