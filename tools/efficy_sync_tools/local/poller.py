"""SQS event sources with Lambda's semantics, because moto's own trigger fires once per message.

What Lambda does and we copy: batches of up to BatchSize, the enabled flag, `batchItemFailures` (only the
failed messages come back; the rest are deleted), an exception fails the whole batch, redelivery after the
visibility timeout and the queue's redrive policy to its DLQ. One deliberate difference: a failed message
becomes visible again after `retry_delay` seconds instead of the queue's full visibility timeout
(minutes in template.yaml), so a local retry takes seconds; a delay the function set itself (efficy_sync's
redelivery, scaled to seconds by the local stack) is kept, as on AWS (moto_sqs.py).

The poller long-polls like Lambda's (a receive returns as soon as a message arrives), for at most
WAIT_SECONDS (Lambda's 20 would make disabling wait as long; a stop ends the long polls with moto's server,
LocalStack.stop). Like Lambda's, it scales with the queue: while the queue is quiet only the first worker polls
(one call each WAIT_SECONDS per queue: at 1 s the idle stack's largest CPU cost), and the others join as soon
as it receives something. Every idle call is CPU the local stack's functions no longer have, since they all share
one process here.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from .lambdas import FunctionRouter
from .template import SqsSource

log = logging.getLogger("efficy_sync.local")
WAIT_SECONDS = 5


class SqsPoller:
    def __init__(
        self,
        source: SqsSource,
        queue_url: str,
        queue_arn: str,
        router: FunctionRouter,
        sqs: Any,
        *,
        region: str,
        workers: int = 2,
        retry_delay: int = 1,
    ) -> None:
        self.source = source
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self._enabled = source.enabled
        self._receiving = 0
        self._state = threading.Condition()
        self._router = router
        self._sqs = sqs
        self._region = region
        self._workers = workers
        self._retry_delay = retry_delay
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._traffic = threading.Event()  # set while the first worker's receives bring messages
        self.batches = 0
        self.failures = 0

    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(
                target=self._loop, args=(i == 0,), name=f"poll-{self.source.function}-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        """Disabling waits for the receives under way (at most WAIT_SECONDS): after it, nothing new is taken."""
        with self._state:
            self._enabled = value
            if not value:
                self._state.wait_for(lambda: self._receiving == 0, timeout=WAIT_SECONDS + 5)

    def signal_stop(self) -> None:
        """Ask the workers to stop without waiting, so that several pollers stop in parallel. A batch already
        received but not yet handed to its function is not delivered after this (see `wait_idle`)."""
        with self._busy_lock:
            self._stop.set()
        self._traffic.set()  # a waiting follower wakes to see the stop

    def wait_idle(self, timeout: float) -> bool:
        """After `signal_stop`: wait (at most `timeout` s) for the batches being delivered to end, so that the
        stack does not pull moto from under a handler half way through (its AWS calls and the batch's deletes
        would fail). False if one is still running."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.busy

    def stop(self) -> None:
        self.signal_stop()
        for thread in self._threads:
            thread.join(timeout=WAIT_SECONDS + 5)

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def _loop(self, lead: bool) -> None:
        while not self._stop.is_set():
            if not lead and not self._traffic.wait(WAIT_SECONDS):
                continue  # the queue is quiet: the lead worker alone polls it
            with self._state:
                enabled = self._enabled
                if enabled:
                    self._receiving += 1
            if not enabled:
                time.sleep(0.2)
                continue
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.source.batch_size,
                    WaitTimeSeconds=WAIT_SECONDS,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:  # the server is going away, or a blip: Lambda's poller also just tries again
                if self._stop.is_set():
                    return
                log.exception("receive failed on %s", self.queue_url)
                time.sleep(0.5)
                continue
            finally:
                with self._state:
                    self._receiving -= 1
                    self._state.notify_all()
            if lead:
                if messages:
                    self._traffic.set()
                elif not self._stop.is_set():
                    self._traffic.clear()
            if not messages:
                continue
            with self._busy_lock:
                if self._stop.is_set():
                    return  # received during the stop: left on the queue, as a stopped Lambda poller leaves it
                self._busy += 1
            try:
                self._deliver(messages)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        self.batches += 1
        event = {"Records": [self._record(m) for m in messages]}
        failed: set[str] = set()
        try:
            result = self._router.invoke(self.source.function, event)
            if self.source.report_batch_item_failures and isinstance(result, dict):
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            log.exception("function %s failed a batch of %d", self.source.function, len(messages))
            failed = {m["MessageId"] for m in messages}
        self.failures += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        try:
            for start in range(0, len(done), 10):
                chunk = done[start : start + 10]
                answer = self._sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
                )
                for entry in answer.get("Failed", []):  # the message comes back after its visibility timeout
                    log.warning("delete failed on %s: %s", self.queue_url, entry.get("Code"))
            for m in messages:
                if m["MessageId"] in failed:
                    self._sqs.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=self._retry_delay
                    )
        except Exception:  # the worker keeps polling: what was not deleted comes back, as on AWS
            if not self._stop.is_set():
                log.exception("acknowledging a batch failed on %s", self.queue_url)

    def _record(self, m: dict[str, Any]) -> dict[str, Any]:
        attributes = dict(m.get("Attributes", {}))
        return {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": attributes,
            "messageAttributes": {
                k: {
                    "stringValue": v.get("StringValue"),
                    "binaryValue": v.get("BinaryValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": v["DataType"],
                }
                for k, v in m.get("MessageAttributes", {}).items()
            },
            "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self._region,
        }
