"""Putting contact changes on SQS: batches of ten, sent in parallel, failed entries retried.

The webhook answers 202 only once every message is on the queue. Any failure (entries SQS lists as failed
after the retries, or a whole call refused: throttling past boto3's retries, BatchRequestTooLong, no access)
raises EnqueueError, the webhook answers 503 "send again", and Efficy's retry is harmless: the FIFO
de-duplication id drops what did land, and a later copy only costs a refetch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from .aws import client
from .changes import ContactChange
from .correlation import message_attributes


class EnqueueError(Exception):
    pass


@dataclass
class EnqueueReport:
    messages: int = 0
    batch_calls: int = 0
    retried_entries: int = 0


@contextmanager
def sqs_call(what: str) -> Iterator[None]:
    """An SQS call whose refusal or unreachability is an EnqueueError naming `what` (the caller answers 503)."""
    from botocore.exceptions import BotoCoreError, ClientError  # loaded with boto3 by client() anyway

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise EnqueueError(f"SQS refused {what} ({code})") from exc
    except BotoCoreError as exc:
        raise EnqueueError(f"SQS could not be reached ({type(exc).__name__})") from exc


def _send_chunk(queue_url: str, chunk: Sequence[ContactChange], attempts: int, report: EnqueueReport) -> None:
    pending = {str(i): change for i, change in enumerate(chunk)}
    for attempt in range(attempts):
        with sqs_call(f"a batch of {len(pending)} messages"):
            response = client("sqs").send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {
                        "Id": entry_id,
                        "MessageBody": change.model_dump_json(),
                        "MessageGroupId": change.group_id,
                        "MessageDeduplicationId": change.dedup_id,
                        # the change's correlation id, for the worker's log lines and stored outcome
                        **(
                            {"MessageAttributes": message_attributes(change.correlation_id)}
                            if change.correlation_id
                            else {}
                        ),
                    }
                    for entry_id, change in pending.items()
                ],
            )
        report.batch_calls += 1
        # stored only where the answer lists it so: an entry it lists in neither list is sent again, never assumed
        stored = {s["Id"] for s in response.get("Successful", [])}
        pending = {entry_id: change for entry_id, change in pending.items() if entry_id not in stored}
        if not pending:
            return
        report.retried_entries += len(pending)
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise EnqueueError(f"{len(pending)} messages could not be queued after {attempts} attempts")


def enqueue_changes(
    queue_url: str, changes: Sequence[ContactChange], *, parallelism: int = 16, attempts: int = 4
) -> EnqueueReport:
    report = EnqueueReport(messages=len(changes))
    chunks = [changes[i : i + 10] for i in range(0, len(changes), 10)]
    if len(chunks) <= 1:
        for chunk in chunks:
            _send_chunk(queue_url, chunk, attempts, report)
        return report
    with ThreadPoolExecutor(max_workers=min(parallelism, len(chunks))) as pool:
        for future in [pool.submit(_send_chunk, queue_url, chunk, attempts, report) for chunk in chunks]:
            future.result()
    return report
