"""One invocation of the opt-out write-back: a batch of SQS messages, each written back to Efficy (optout.py),
with the bookkeeping around them (like worker.Batch for the real-time worker).

- A message that fails is retried: SQS delivers it again after a growing delay (retry_delay: 30 s, 1, 2 ...
  minutes), and after the queue's maxReceiveCount it moves to the DLQ. Nothing is acknowledged before every
  step succeeded.
- Once an integration's Efficy proved unreachable in a batch, that integration's other opt-outs are recorded
  (so every sync honours them from now on) and put back at once, instead of each waiting out the same
  timeouts. Only that integration's: the queue is shared, and one customer's outage must not delay (and
  dead-letter) another's opt-outs.
- What was done is counted and logged without an address or a key in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from .clients.errors import EfficyUnavailable
from .observability import MetricUnit, count, logger, metrics, serving
from .optout import OptOutMessage, WriteBack, WriteBackResult
from .pii import hash_key
from .redelivery import MAX_RECEIVES, retry_delay
from .sync import log_fields


@dataclass
class WriteBackBatch:
    """Kept per invocation, so concurrent invocations never share what one learnt about Efficy."""

    #: the integration's write-back (its config, Efficy client and syncer), built by the handler
    writeback_for: Callable[[str], WriteBack]
    #: makes a failed message invisible for that many seconds (SQS ChangeMessageVisibility on its receipt)
    delay: Callable[[str, int], None]
    #: the integrations whose Efficy proved unreachable in this batch
    efficy_down: set[str] = field(default_factory=set)

    def write_back(self, body: str, receipt_handle: str, receive_count: int) -> WriteBackResult:
        """One opt-out message; raises (the message comes back later) unless it was written back."""
        integration_id = None
        logger.remove_keys(["integration_id"])  # a message that does not parse is nobody's, not the last one's
        try:
            message = OptOutMessage.model_validate_json(body)
            integration_id = message.integration_id
            logger.append_keys(integration_id=integration_id)
            serving(integration_id)  # also when it fails: API calls are attributed only to a lone integration
            writeback = self.writeback_for(integration_id)
            if integration_id in self.efficy_down:
                writeback.record_only(message)  # recorded all the same: from now on every sync honours it
                raise EfficyUnavailable("Efficy was unreachable earlier in this batch")
            result = writeback.process(message)
        except Exception as exc:
            if integration_id is not None and isinstance(exc, EfficyUnavailable):
                self.efficy_down.add(integration_id)
            metrics.add_metric(name="OptOutRetried", unit=MetricUnit.Count, value=1)
            # a validation error quotes the message body, which may hold an address: name the error only
            detail = "invalid message" if isinstance(exc, ValidationError) else str(exc)
            logger.warning("opt-out not written back yet: %s: %s", type(exc).__name__, detail)
            self._retry_later(receipt_handle, receive_count)
            raise
        report(message, result)
        return result

    def _retry_later(self, receipt_handle: str, receive_count: int) -> None:
        """Lambda leaves a failed message invisible for the queue's visibility timeout; this makes it grow, except
        on the last receive (redelivery.MAX_RECEIVES), after which SQS moves it to the DLQ anyway."""
        if receive_count >= MAX_RECEIVES:
            return
        try:
            self.delay(receipt_handle, retry_delay(max(1, receive_count)))
        except Exception as exc:  # no permission or a blip: the queue's own visibility timeout applies
            # the error's name only: a traceback would carry the opt-out's own failure (an Efficy URL, a key)
            logger.warning("could not delay the retry of an opt-out: %s", type(exc).__name__)


def report(message: OptOutMessage, result: WriteBackResult) -> None:
    """Metrics and one log line for a written-back opt-out (persons as hashed keys)."""
    persons = [hash_key(k) for k in result.persons]
    if result.several_contacts:
        metrics.add_metric(name="OptOutSeveralContacts", unit=MetricUnit.Count, value=1)
        logger.warning("several Efficy contacts share the opted-out address: all opted out", extra={"persons": persons})
    if result.superseded:
        metrics.add_metric(name="OptOutSuperseded", unit=MetricUnit.Count, value=len(result.superseded))
    if result.missing and not result.by_address_after_key:  # not found again by the address either
        metrics.add_metric(name="OptOutPersonMissing", unit=MetricUnit.Count, value=len(result.missing))
    if result.skipped_slots:
        logger.warning(
            "subscriptions not written back (no longer mapped, or their CRM profile backs another consent)",
            extra={"slots": result.skipped_slots},
        )
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
            # removals beyond the opt-out (a tightened condition's delete) held by the real-time breaker
            "held": [hash_key(k) for k, o in result.outcomes.items() if o.held],
        },
    )
