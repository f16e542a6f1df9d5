"""SQS FIFO contact-changes -> APSIS One. Partial batch failures let only the failed messages come back, each
after a growing delay (efficy_sync.redelivery)."""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from efficy_sync import gc_policy
from efficy_sync.budget import paced
from efficy_sync.changes import ContactChange
from efficy_sync.clients.http import deadline, lambda_seconds
from efficy_sync.connections import apsis_client, efficy_client, email_lookup
from efficy_sync.correlation import from_sqs_record
from efficy_sync.fullsync.parking import ParkingLot
from efficy_sync.observability import count, logger, metrics, serving
from efficy_sync.pii import hash_key
from efficy_sync.redelivery import INTEGRATION_FAILURES, delay_retry
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.store.removals import BurstGate, HeldRemovals, RemovalBreaker
from efficy_sync.sync import PersonSyncer, log_fields
from efficy_sync.tracing import capture_handler
from efficy_sync.tracing import record as record_scope
from efficy_sync.worker import Batch, BatchWorker

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

# an applied version is seen at once (its number is read each time; the body only when it changed)
configs = ConfigStore(settings().config_table, check_version=True)
states = PersonStateStore(settings().state_table)
# A burst of removals beyond the integration's threshold is held, not sent (the blast-radius breaker).
held, breaker = HeldRemovals(settings().state_table), RemovalBreaker(settings().state_table)
worker = BatchWorker(
    get_config=configs.get,
    # APSIS calls share the account's budget with the full-sync pages and other workers (budget.py)
    build_syncer=lambda cfg: PersonSyncer(
        cfg,
        paced(cfg, apsis_client(cfg)),
        states,
        email_lookup=email_lookup(cfg),
        removal_gate=BurstGate(cfg, breaker, held),
    ),
    get_persons=lambda cfg, keys, fields: efficy_client(cfg).get_persons(keys, fields),
    states=states,
    # While the integration runs a full sync, its changes wait there and are re-enqueued when it ends.
    parking=ParkingLot(settings().state_table),
)
METRIC_BY_RESULT = {
    "synced": "PersonsSynced",
    "skipped": "PersonsSkipped",
    "failed": "PersonsFailed",
    "stale": "StaleEventsDropped",
    "parked": "ChangesParked",
}


def record_handler_for(batch: Batch) -> Callable[[SQSRecord], None]:
    def record_handler(record: SQSRecord) -> None:  # powertools passes it as record=
        # This record's correlation id is on its log lines, trace and stored outcome, and on nothing after it.
        with record_scope(correlation_id_of(record)):
            change = ContactChange.model_validate_json(record.body)  # a poison message is not delayed
            # before the sync: a change that fails still served its integration, so the invocation's API calls
            # (its 429s) are not published as those of another integration of the batch
            serving(change.integration_id)
            try:
                outcome = batch.apply(change)
            except Exception as exc:
                receives = int(record.attributes.approximate_receive_count or 1)
                not_applied(change, exc, receives)
                if isinstance(exc, INTEGRATION_FAILURES):
                    # an outage, refused credentials, the Lambda's time: tried again later and later
                    # (redelivery.py), so that an outage of hours, not half an hour, sends it to the DLQ
                    delay_retry(settings().contact_queue_url, record.receipt_handle, receives)
                raise
            logger.info("person applied", extra={"integration_id": change.integration_id, **log_fields(outcome)})
            metric = METRIC_BY_RESULT.get(outcome.result)
            if metric:
                count(metric, 1, integration_id=change.integration_id)
            if outcome.result != "failed":
                count("PersonsProcessed", 1, integration_id=change.integration_id)

    return record_handler


def not_applied(change: ContactChange, exc: Exception, receives: int) -> None:
    """The one line a failed change leaves: the processor logs nothing above DEBUG, so refused credentials or a
    deleted config left no trace for the runbook's queries until the DLQ, hours later. Named by the error's class,
    category and status, never its text (an API URL or answer may hold the person's key or address)."""
    logger.warning(
        "change not applied, retried later",
        extra={
            "integration_id": change.integration_id,
            "person": hash_key(change.person_key),
            "result": "failed",
            "error_category": getattr(exc, "category", None) or "error",
            "error": type(exc).__name__,
            "status": getattr(exc, "status", None),
            "receive": receives,
        },
    )


def correlation_id_of(message: SQSRecord) -> str:
    """The id the message carries (attribute, else body); a message queued without one (parked, an old
    message) is known by its SQS message id."""
    carried = from_sqs_record(message.raw_event)
    if carried:
        return carried
    try:
        return ContactChange.model_validate_json(message.body).correlation_id or message.message_id
    except ValueError:
        return message.message_id


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    changes = []
    for raw in event.get("Records", []):
        try:
            changes.append(ContactChange.model_validate_json(raw["body"]))
        except ValueError:
            continue  # a poison message fails in record_handler and reaches the DLQ after maxReceiveCount
    # API calls that could not end before the Lambda's timeout are not made (OutOfTime): their messages fail
    # and stay retryable, and the batch reports in time instead of being redelivered whole.
    with deadline(lambda_seconds(context, settings().deadline_reserve)):
        batch = worker.prefetch(changes)
        # One failed message holds back the later messages of its group only (per-person order is kept).
        processor = SqsFifoPartialProcessor(skip_group_on_error=True)
        # a batch whose every person failed (one person in an outage, at low traffic) is a partial failure, as in
        # write_back: raised, it counted as a crashed invocation (ApplyChangesErrorsAlarm: "a bug") and the
        # runtime logged every child traceback (requests' URLs with person keys) outside the PII-safe formatter
        processor.raise_on_entire_batch_failure = False
        return process_partial_response(
            event=event, record_handler=record_handler_for(batch), processor=processor, context=context
        )
