"""SQS opt-outs -> Efficy: record, remove from the mapped CRM profile, confirm, sync (efficy_sync.optout).

Partial batch failures: only the failed opt-outs come back. A failed one is made invisible for a growing
delay (30 s, 1, 2 ... minutes) before SQS delivers it again; after the queue's maxReceiveCount it moves to the
DLQ, whose alarm asks for a fix and a redrive. Nothing is acknowledged before every step succeeded.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from efficy_sync import gc_policy
from efficy_sync.aws import brief_client
from efficy_sync.budget import paced
from efficy_sync.clients.http import RetryPolicy, deadline, lambda_seconds
from efficy_sync.connections import apsis_client, efficy_client, email_lookup
from efficy_sync.correlation import from_sqs_record
from efficy_sync.observability import logger, metrics
from efficy_sync.optout import WriteBack
from efficy_sync.optout_gate import OptOutGate
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.store.removals import BurstGate, HeldRemovals, RemovalBreaker
from efficy_sync.sync import PersonSyncer
from efficy_sync.tracing import capture_handler
from efficy_sync.tracing import record as record_scope
from efficy_sync.writeback_batch import WriteBackBatch

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

# an applied version is seen at once (its number is read each time; the body only when it changed)
configs = ConfigStore(settings().config_table, check_version=True)
states = PersonStateStore(settings().state_table)
# The real-time worker's breaker (its counter, trip and holds): one burst of removals across both paths is judged
# together. What a person's own opt-out removes is not counted (optout_gate.py); the opt-out is never held.
held, breaker = HeldRemovals(settings().state_table), RemovalBreaker(settings().state_table)
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


def _writeback_for(integration_id: str) -> WriteBack:
    """The integration's write-back: its config, its Efficy client (impatient) and a syncer paced by the
    account's shared budget, whose removals beyond the person's own opt-out the real-time breaker judges (a
    tightened sync condition's deletes and untags); the opt-out itself is never held back."""
    cfg = configs.get(integration_id)
    gate = OptOutGate(cfg, BurstGate(cfg, breaker, held))
    apsis = paced(cfg, apsis_client(cfg))
    syncer = PersonSyncer(cfg, apsis, states, email_lookup=email_lookup(cfg), removal_gate=gate)
    return WriteBack(cfg, efficy_client(cfg, POLICY), states, syncer)


def _delay(receipt_handle: str, seconds: int) -> None:
    brief_client("sqs").change_message_visibility(
        QueueUrl=settings().optout_queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
    )


def _record_handler(batch: WriteBackBatch) -> Callable[[SQSRecord], None]:
    def write_back(record: SQSRecord) -> None:
        """One opt-out, under the correlation id of the request that brought it (its log lines, trace, outcome)."""
        with record_scope(from_sqs_record(record.raw_event) or record.message_id):
            receives = int(record.attributes.approximate_receive_count or 1)
            batch.write_back(record.body, record.receipt_handle, receives)

    return write_back


@logger.inject_lambda_context
@capture_handler
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    batch = WriteBackBatch(_writeback_for, _delay)  # per invocation: what it learns about Efficy stays in it
    # Calls that could not end before the Lambda's timeout are not made: those opt-outs fail and come back.
    with deadline(lambda_seconds(context, settings().deadline_reserve)):
        return process_partial_response(
            event=event, record_handler=_record_handler(batch), processor=processor, context=context
        )
