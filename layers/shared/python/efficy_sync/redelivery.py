"""When SQS delivers a failed message again: later and later, not at the queue's one pace.

Lambda leaves a failed message invisible for its queue's visibility timeout, and the queue moves it to its DLQ
after maxReceiveCount receives. With the contact queue's 6 minutes and 5 receives, an APSIS One or Efficy outage
longer than half an hour (or credentials refused that long) dead-lettered every change it touched, and an operator
had to redrive them once it was over. A failed message is made invisible for a growing delay instead: 30 s, 1, 2,
4 ... minutes, at most 6 hours (SQS allows 12). A blip is retried within a minute rather than after six, and with
maxReceiveCount 10 a message is tried for about four hours before it reaches the DLQ. The opt-out write-back and
the real-time worker share this schedule. The last receive is not delayed: SQS moves the message to the DLQ on
the next one, so a delay there only held the DLQ (and its alarm, and the person's later changes) back by hours.
The real-time worker delays integration failures only (an outage, rate limits past the retries, refused
credentials, a section or mapping APSIS no longer has, the Lambda's time): a bug or a record Efficy refuses reaches the DLQ at the queue's own pace.

The local stack runs the same code with its delays scaled down to seconds (EFFICY_SYNC_RETRY_FIRST_SECONDS and
EFFICY_SYNC_RETRY_MAX_SECONDS; read per call, since they are a deployment's, not an integration's, setting).
"""

from __future__ import annotations

import os

from .aws import brief_client
from .clients.errors import AuthError, MappingGone, TransientError
from .observability import logger

FIRST_SECONDS, MAX_SECONDS = 30, 6 * 3600
#: the maxReceiveCount of the queues whose messages are delayed (template.yaml; tests/unit/test_template.py
#: checks that they agree)
MAX_RECEIVES = 10
#: what the real-time worker delays: failures of the integration, not of one person's data or of our code. A
#: section, keyspace or mapped name APSIS no longer has (MappingGone) is one, as refused credentials are: every
#: change of the integration fails alike until an admin fixes it, and at the queue's pace they all reached the
#: DLQ within the hour, not the four hours the runbook gives for a fix
INTEGRATION_FAILURES = (TransientError, AuthError, MappingGone)


def retry_delay(receive_count: int, *, first: int | None = None, cap: int | None = None) -> int:
    """Seconds before a message that failed on its `receive_count`-th receive is delivered again."""
    first = first if first is not None else _seconds("EFFICY_SYNC_RETRY_FIRST_SECONDS", FIRST_SECONDS)
    cap = cap if cap is not None else _seconds("EFFICY_SYNC_RETRY_MAX_SECONDS", MAX_SECONDS)
    return int(min(cap, first * 2 ** max(0, receive_count - 1)))


def delay_retry(queue_url: str, receipt_handle: str, receive_count: int) -> None:
    """Best effort: when the delay cannot be set (no permission, a blip), the queue's visibility timeout applies,
    which is what Lambda does anyway; the message itself is failed either way, never acknowledged here. Logged by
    the error's name only: raised inside the handling of the person's own failure, a traceback would carry that
    failure's text (an API URL with the person's key) into the logs."""
    if receive_count >= MAX_RECEIVES:
        return
    try:
        brief_client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=retry_delay(max(1, receive_count))
        )
    except Exception as exc:
        logger.warning("could not delay the retry of a failed message: %s", type(exc).__name__)


def _seconds(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default
