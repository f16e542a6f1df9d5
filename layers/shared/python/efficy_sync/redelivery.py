"""When SQS delivers a failed message again: later and later, not at the queue's one pace.

Lambda leaves a failed message invisible for its queue's visibility timeout, and the queue moves it to its DLQ
after maxReceiveCount receives. With the contact queue's 6 minutes and 5 receives, an APSIS One or Efficy outage
longer than half an hour (or credentials refused that long) dead-lettered every change it touched, and an operator
had to redrive them once it was over. A failed message is made invisible for a growing delay instead: 30 s, 1, 2,
4 ... minutes, at most 6 hours (SQS allows 12). A blip is retried within a minute rather than after six, and with
maxReceiveCount 10 a message is tried for about four hours before it reaches the DLQ. The opt-out write-back and
the real-time worker share this schedule.

The local stack runs the same code with its delays scaled down to seconds (EFFICY_SYNC_RETRY_FIRST_SECONDS and
EFFICY_SYNC_RETRY_MAX_SECONDS; read per call, since they are a deployment's, not an integration's, setting).
"""

from __future__ import annotations

import os

from .aws import client
from .observability import logger

FIRST_SECONDS, MAX_SECONDS = 30, 6 * 3600


def retry_delay(receive_count: int, *, first: int | None = None, cap: int | None = None) -> int:
    """Seconds before a message that failed on its `receive_count`-th receive is delivered again."""
    first = first if first is not None else _seconds("EFFICY_SYNC_RETRY_FIRST_SECONDS", FIRST_SECONDS)
    cap = cap if cap is not None else _seconds("EFFICY_SYNC_RETRY_MAX_SECONDS", MAX_SECONDS)
    return int(min(cap, first * 2 ** max(0, receive_count - 1)))


def delay_retry(queue_url: str, receipt_handle: str, receive_count: int) -> None:
    """Best effort: when the delay cannot be set (no permission, a blip), the queue's visibility timeout applies,
    which is what Lambda does anyway; the message itself is failed either way, never acknowledged here."""
    try:
        client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=retry_delay(max(1, receive_count))
        )
    except Exception:
        logger.warning("could not delay the retry of a failed message", exc_info=True)


def _seconds(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default
