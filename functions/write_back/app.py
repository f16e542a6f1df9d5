"""SQS opt-outs -> Efficy: record, remove from the mapped CRM profile, confirm, sync (efficy_sync.optout).

Partial batch failures: only the failed opt-outs come back. A failed one is made invisible for a growing
delay (30 s, 1, 2 ... minutes) before SQS delivers it again; after the queue's maxReceiveCount it moves to the
DLQ, whose alarm asks for a fix and a redrive. Nothing is acknowledged before every step succeeded.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from efficy_sync.aws import client
from efficy_sync.budget import paced
from efficy_sync.clients.errors import EfficyUnavailable
from efficy_sync.clients.http import RetryPolicy, deadline, lambda_seconds
from efficy_sync.connections import apsis_client, efficy_client, email_lookup
from efficy_sync.correlation import from_sqs_record
from efficy_sync.observability import MetricUnit, count, logger, metrics
from efficy_sync.optout import OptOutMessage, WriteBack, WriteBackResult, retry_delay
from efficy_sync.pii import hash_key
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.sync import PersonSyncer, log_fields
from efficy_sync.tracing import capture_handler
from efficy_sync.tracing import record as record_scope
from pydantic import ValidationError

configs = ConfigStore(settings().config_table, cache_seconds=settings().cache_seconds)
states = PersonStateStore(settings().state_table)
# A batch where every opt-out failed (Efficy down) is reported item by item rather than raised: the same retries,
# without counting as a crashed invocation (the DLQ alarm and OptOutRetried tell that story).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# Few in-call retries: the queue's redelivery is the backoff that matters, and a Lambda must not spend its
# timeout sleeping on a down Efficy.
# The client comes from the shared factory (connections.efficy_client), so the integration's error codes and a
# rotated API key apply here as everywhere else.
POLICY = RetryPolicy(
    total=2,
    backoff_factor=0.25,
    backoff_max=2.0,
    connect_timeout=3.0,
    read_timeout=6.0,
    retry_after_max=min(2.0, settings().retry_after_max),
)


def _report(message: OptOutMessage, result: WriteBackResult) -> None:
    persons = [hash_key(k) for k in result.persons]
    if result.several_contacts:
        metrics.add_metric(name="OptOutSeveralContacts", unit=MetricUnit.Count, value=1)
        logger.warning("several Efficy contacts share the opted-out address: all opted out", extra={"persons": persons})
    if result.superseded:
        metrics.add_metric(name="OptOutSuperseded", unit=MetricUnit.Count, value=len(result.superseded))
    if result.missing:
        metrics.add_metric(name="OptOutPersonMissing", unit=MetricUnit.Count, value=len(result.missing))
    if result.skipped_slots:
        logger.warning("subscriptions no longer mapped: not written back", extra={"slots": result.skipped_slots})
    duplicates = sum(1 for k in result.persons if not result.recorded.get(k))
    if duplicates:
        metrics.add_metric(name="OptOutDuplicates", unit=MetricUnit.Count, value=duplicates)
    count("OptOutsWrittenBack", len(result.confirmed_stamps), integration_id=message.integration_id)
    logger.info(
        "opt-out written back",
        extra={
            "event": message.event,
            "persons": persons,
            "matched_by": result.matched_by,
            "slots": [s.key for s in result.slots],
            "missing": [hash_key(k) for k in result.missing],
            "syncs": [log_fields(o) for o in result.outcomes.values()],
        },
    )


def _retry_later(record: SQSRecord) -> None:
    """Lambda leaves a failed message invisible for the queue's visibility timeout; this makes it grow."""
    receives = int(record.attributes.approximate_receive_count or 1)
    try:
        client("sqs").change_message_visibility(
            QueueUrl=settings().optout_queue_url,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=retry_delay(receives),
        )
    except Exception:  # no permission or a blip: the queue's own visibility timeout applies
        logger.warning("could not delay the retry of an opt-out", exc_info=True)


class _CurrentBatch:
    """Once Efficy proved unreachable in a batch, its other opt-outs are put back at once instead of each
    waiting out the same timeouts (they would only fail the same way, and the Lambda could time out)."""

    efficy_down = False


def record_handler(record: SQSRecord) -> None:  # powertools passes it as record=
    """One opt-out, under the correlation id of the request that brought it (its log lines, trace, outcome)."""
    with record_scope(from_sqs_record(record.raw_event) or record.message_id):
        _write_back(record)


def _write_back(record: SQSRecord) -> None:
    try:
        message = OptOutMessage.model_validate_json(record.body)
        logger.append_keys(integration_id=message.integration_id)
        cfg = configs.get(message.integration_id)
        # the account's shared budget; no removal gate: an APSIS opt-out is never held back
        syncer = PersonSyncer(cfg, paced(cfg, apsis_client(cfg)), states, email_lookup=email_lookup(cfg))
        writeback = WriteBack(cfg, efficy_client(cfg, POLICY), states, syncer)
        if _CurrentBatch.efficy_down:
            writeback.record_only(message)  # recorded all the same: from now on every sync honours it
            raise EfficyUnavailable("Efficy was unreachable earlier in this batch")
        result = writeback.process(message)
    except Exception as exc:
        _CurrentBatch.efficy_down = _CurrentBatch.efficy_down or isinstance(exc, EfficyUnavailable)
        metrics.add_metric(name="OptOutRetried", unit=MetricUnit.Count, value=1)
        # a validation error quotes the message body, which may hold an address: name the error only
        detail = "invalid message" if isinstance(exc, ValidationError) else str(exc)
        logger.warning("opt-out not written back yet: %s: %s", type(exc).__name__, detail)
        _retry_later(record)
        raise
    _report(message, result)


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    _CurrentBatch.efficy_down = False
    # Calls that could not end before the Lambda's timeout are not made: those opt-outs fail and come back.
    with deadline(lambda_seconds(context, settings().deadline_reserve)):
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
