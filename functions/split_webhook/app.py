"""SQS bundles of a large webhook -> one FIFO message per person (efficy_sync.bundles says why and how).

One bundle per invocation (BatchSize 1): a bundle holds up to about 800 changes, about 80 SendMessageBatch calls.
A bundle is acknowledged only once every change is on the FIFO queue; otherwise it comes back after the queue's
visibility timeout, and after 5 receives it waits in the DLQ (alarmed) for `efficy-sync dlq redrive`. A second
split of what already landed is dropped by the FIFO de-duplication ids (or costs one refetch after 5 minutes).
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from efficy_sync import gc_policy
from efficy_sync.bundles import unpack
from efficy_sync.correlation import scope
from efficy_sync.observability import count, logger, metrics
from efficy_sync.pii import hash_key
from efficy_sync.queue import enqueue_changes
from efficy_sync.settings import settings
from efficy_sync.tracing import capture_handler

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def split(record: SQSRecord) -> None:
    changes = unpack(record.body)
    report = enqueue_changes(settings().contact_queue_url, changes)
    count("WebhookChangesSplit", len(changes))  # one webhook's bundle: one integration
    logger.info(
        "bundle split",
        extra={
            "integration_id": changes[0].integration_id if changes else None,
            "persons": len(changes),
            "sqs_batches": report.batch_calls,
        },
    )
    # The webhook route leaves a bundled change's "change queued" line to this point, where it is true.
    for change in changes:
        with scope(change.correlation_id):
            logger.info("change queued", extra={"person": hash_key(change.person_key), "operation": change.operation})


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    return process_partial_response(event=event, record_handler=split, processor=processor, context=context)
