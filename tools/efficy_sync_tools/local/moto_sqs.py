"""SQS speed fixes for moto, applied by the local stack only (moto's semantics are kept, see each function).

FIFO de-duplication: moto compares every message sent with *every* message on the queue to find one with
the same de-duplication id, so sending n messages costs n²/2 comparisons: 47 % of the time a 10,000-record
webhook took to be answered. An index of the de-duplication ids of each queue makes the lookup cost what it
finds. The semantics are moto's, unchanged: a message is dropped when a message with the same id is still on
the queue (received or not, deleted ones no longer count) and was sent less than 5 minutes before it; moto
de-duplicates per queue whatever DeduplicationScope says (our ids name the person, who is also the message
group, so the scope makes no difference to this product). The look-up and the append now happen under the
queue's lock, so two threads sending the same id at once no longer both get through.

Receive, delete and visibility changes under the queue's lock: moto's server answers each request on its own
thread and its SQS backend takes no lock there. Two receives could both take one message (each with its own
receipt handle), and two deletes each rebuilt the queue's message list from the same snapshot, so one put
back a message the other had deleted, received and in flight: it sat invisible for the queue's visibility
timeout (6 minutes) and `make bench`'s real-time run waited on it. A delete could also drop a message sent
while it rebuilt the list. A receive's wait releases the lock (a Condition's wait), so sends go on meanwhile.

Long polling: moto's ReceiveMessage with WaitTimeSeconds waits "until the queue has a visible message", but a
FIFO message whose group is in flight is visible and still not deliverable, so a long poll on such a queue
spun on the CPU for its whole wait. Here a waiting receive sleeps until a message is sent or deleted (which
may release a group), or until the first in-flight or delayed message may show (`_until_a_message_may_show`).

Retry delays: a function that sets a failed message's visibility itself (the workers' growing delays) keeps it;
the pollers' own shortcut to `retry_delay` no longer overwrites it (`_delays_kept`).

Message move tasks: moto has none, and answered `dlq redrive`'s StartMessageMoveTask / ListMessageMoveTasks
with a 500 and a NotImplementedError traceback in the stack's log (a log the tests read for tracebacks). They
now answer UnsupportedOperation, as an endpoint without them does; the CLI's built-in mover takes over either way.
"""

from __future__ import annotations

from typing import Any

#: after a message's visibility timeout or delay ends, how soon a waiting receive looks again (moto's `visible` is
#: strictly after its visible_at, in milliseconds)
SHOW_MARGIN = 0.005


def _until_a_message_may_show(queue: Any, timeout: float) -> float:
    """Seconds a waiting receive may sleep: until the first in-flight or delayed message may show again (no signal
    marks that moment), at most `timeout`. A fixed slice of 0.1 s woke every poller ten times a second on an idle
    stack, the larger part of its idle CPU."""
    from moto.core.utils import unix_time_millis

    now = unix_time_millis()
    ends = [m.visible_at for m in queue._messages if m.visible_at > now]
    ends += [m.delayed_until for m in queue._messages if m.delayed_until > now]
    return min([float(timeout), *((end - now) / 1000 + SHOW_MARGIN for end in ends)])


#: in the User-Agent of the local stack's pollers (their SQS client's user_agent_extra)
POLLER_AGENT = "efficy-sync-local-poller"
_applied = False


def _dedup_index(queue: Any) -> dict[str, list[Any]]:
    index = queue.__dict__.get("_efficy_dedup_index")
    if index is None:
        index = {}
        for message in queue._messages:
            if message.deduplication_id is not None:
                index.setdefault(message.deduplication_id, []).append(message)
        queue.__dict__["_efficy_dedup_index"] = index
    return index


def _is_duplicate(queue: Any, message: Any, window_seconds: int) -> bool:
    """moto's rule: another message with this id, still on the queue, sent less than the window before."""
    index = _dedup_index(queue)
    candidates = index.get(message.deduplication_id)
    if not candidates:
        return False
    on_queue = {id(m) for m in queue._messages}  # only paid when the id was seen before (a real duplicate)
    candidates[:] = [m for m in candidates if id(m) in on_queue]
    return any((message.sent_timestamp - m.sent_timestamp) / 1000 < window_seconds for m in candidates)


def _remember(queue: Any, message: Any) -> None:
    index = _dedup_index(queue)
    index.setdefault(message.deduplication_id, []).append(message)
    # Deleted messages stay in the index until a clean-up; cleaning when it has grown past twice the queue
    # keeps both memory and the amortised cost per message bounded.
    if len(index) > 2 * len(queue._messages) + 1024:
        queue.__dict__.pop("_efficy_dedup_index", None)
        _dedup_index(queue)


def apply() -> None:
    """Patch moto's SQS Queue (idempotent)."""
    global _applied
    if _applied:
        return
    from moto.sqs import models
    from moto.sqs.models import Queue

    original_add = Queue.add_message
    original_delete = Queue.delete_message

    def add_message(self: Queue, message: Any) -> None:
        deduplicate = self.fifo_queue and (
            self.attributes.get("ContentBasedDeduplication") == "true" or message.deduplication_id
        )
        if not deduplicate:
            original_add(self, message)
            return
        with self._messages_lock:
            if _is_duplicate(self, message, models.DEDUPLICATION_TIME_IN_SECONDS):
                return
            self._messages.append(message)
            _remember(self, message)
            self._messages_lock.notify_all()
        _fire_event_source_mappings(self)

    def delete_message(self: Queue, receipt_handle: str) -> None:
        with self._messages_lock:  # the list is rebuilt: no other delete, receive or send in between
            original_delete(self, receipt_handle)
            self._messages_lock.notify_all()  # the message's group may be free for a waiting receive now

    original_receive = models.SQSBackend.receive_message
    original_visibility = models.SQSBackend.change_message_visibility

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:  # one scan at a time marks messages received; its waits release the lock
            return original_receive(self, queue_name, *args, **kwargs)

    def change_message_visibility(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return original_visibility(self, queue_name, *args, **kwargs)

    def wait_for_messages(self: Queue, timeout: int) -> None:
        with self._messages_lock:
            self._messages_lock.wait(timeout=_until_a_message_may_show(self, timeout))

    Queue.add_message = add_message  # type: ignore[method-assign]
    Queue.delete_message = delete_message  # type: ignore[method-assign]
    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]
    models.SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
    models.SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]
    _no_move_tasks()
    _delays_kept()
    _applied = True


def _delays_kept() -> None:
    """A handler's retry delay outlives the poller's shortcut. Lambda leaves a failed message invisible for the
    queue's visibility timeout, or for what the function set meanwhile (the workers' growing delays,
    efficy_sync/redelivery.py); the local pollers shorten the first to `retry_delay` seconds with a
    ChangeMessageVisibility of their own after the batch, which overwrote the second. A poller's change (told by
    its User-Agent) is ignored for a receipt whose visibility the function already changed."""
    from moto.core.responses import EmptyResult
    from moto.sqs.responses import SQSResponse

    original = SQSResponse.change_message_visibility

    def change_message_visibility(self: Any) -> Any:
        handle = self._get_param("ReceiptHandle")
        queue = self.sqs_backend.get_queue(self._get_queue_name())
        by_poller = POLLER_AGENT in (self.headers.get("User-Agent") or "")
        with queue._messages_lock:
            message = next((m for m in queue._messages if m.had_receipt_handle(handle)), None)
            if message is not None and by_poller and getattr(message, "_delayed_receipt", None) == handle:
                return EmptyResult()
            if message is not None and not by_poller:
                message._delayed_receipt = handle
        return original(self)

    SQSResponse.change_message_visibility = change_message_visibility  # type: ignore[method-assign]


def _no_move_tasks() -> None:
    from moto.sqs.exceptions import SQSException
    from moto.sqs.responses import SQSResponse

    def unsupported(self: Any) -> Any:
        raise SQSException("UnsupportedOperation", "the local stack has no message move task")

    for action in ("start_message_move_task", "list_message_move_tasks", "cancel_message_move_task"):
        setattr(SQSResponse, action, unsupported)


def _fire_event_source_mappings(queue: Any) -> None:
    """moto's own Lambda trigger, as in its add_message (the local stack disables the mappings: see aws.py)."""
    if not any(esm.enabled for esm in queue.lambda_event_source_mappings.values()):
        return
    from moto.awslambda.utils import get_backend
    from moto.sqs.models import sqs_backends

    for arn, esm in queue.lambda_event_source_mappings.items():
        if not esm.enabled:
            continue
        backend = sqs_backends[queue.account_id][queue.region]
        messages = backend.receive_message(
            queue.name, esm.batch_size, queue.receive_message_wait_time_seconds, queue.visibility_timeout
        )
        result = get_backend(queue.account_id, queue.region).send_sqs_batch(arn, messages, queue.queue_arn)
        for m in messages:
            if result:
                backend.delete_message(queue.name, m.receipt_handle)
            else:
                backend.change_message_visibility(queue.name, m.receipt_handle, visibility_timeout=0)
