"""Large webhooks: their person changes reach the FIFO queue in a few bundle messages, split after the 202.

Why: a webhook of 10,000 persons was 1,000 SendMessageBatch calls before its 202 (about 3.7 ms of botocore CPU
each in the Lambda, plus SQS's own time): 5-11 s on the local stack, while Efficy waits and API Gateway gives up
at 29 s. Packed into bundles of up to `webhook_bundle_bytes` (below SQS's 256 KiB message limit), the same changes
are about 13 SendMessage calls. The splitter Lambda (functions/split_webhook) then puts each bundle's changes on
the FIFO queue exactly as the direct path does (same group ids, de-duplication ids, correlation ids).

Nothing is lost: the webhook answers 202 only once every bundle is on the bundle queue (durable, with a DLQ);
otherwise 503 and Efficy sends it again (what the FIFO de-duplication does not drop costs a refetch). A bundle is
deleted only after all of its changes are on the FIFO queue; a split that fails half way is retried whole, and
the de-duplication ids make the second copy of what landed harmless. A change that reaches the FIFO queue after
a newer webhook's change of the same person is harmless too: the worker refetches the person from Efficy and
never stores an older snapshot over a newer one (person_plan.is_stale and the state store's condition).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .aws import client
from .changes import ContactChange
from .queue import EnqueueReport, sqs_call

#: the bundle format's version, so a splitter can refuse a body it does not know instead of guessing
VERSION = 1
_ENVELOPE = len(json.dumps({"v": VERSION, "changes": []}))


class BundleError(ValueError):
    """A bundle message the splitter cannot read (not a bundle, or a newer format)."""


def pack(changes: Sequence[ContactChange], max_bytes: int) -> list[str]:
    """Message bodies of at most `max_bytes` (UTF-8), each a JSON list of whole changes, in webhook order."""
    bodies: list[str] = []
    current: list[str] = []
    size = _ENVELOPE
    for change in changes:
        item = change.model_dump_json(exclude_defaults=True)
        grown = size + len(item.encode()) + (1 if current else 0)
        if current and grown > max_bytes:
            bodies.append(_body(current))
            current, grown = [], _ENVELOPE + len(item.encode())
        current.append(item)
        size = grown
    if current:
        bodies.append(_body(current))
    return bodies


def _body(items: list[str]) -> str:
    joined = ",".join(items)
    return f'{{"v": {VERSION}, "changes": [{joined}]}}'


def unpack(body: str) -> list[ContactChange]:
    """The changes of one bundle message; BundleError when it is not a bundle this code can read."""
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        raise BundleError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("changes"), list):
        raise BundleError(f"not a version {VERSION} bundle")
    return [ContactChange.model_validate(item) for item in data["changes"]]


def send_bundles(
    queue_url: str, changes: Sequence[ContactChange], *, max_bytes: int, parallelism: int = 8
) -> EnqueueReport:
    """Puts `changes` on the bundle queue; raises EnqueueError unless every bundle landed (the caller answers
    503 then, and Efficy's retry is harmless: see the module docstring)."""
    bodies = pack(changes, max_bytes)
    report = EnqueueReport(messages=len(changes))

    def send(body: str) -> None:
        with sqs_call("a bundle of changes"):
            client("sqs").send_message(QueueUrl=queue_url, MessageBody=body)
        report.batch_calls += 1

    if len(bodies) == 1:
        send(bodies[0])
        return report
    with ThreadPoolExecutor(max_workers=min(parallelism, len(bodies))) as pool:
        for future in [pool.submit(send, body) for body in bodies]:
            future.result()
    return report
