"""The correlation id that follows one change from where it entered to the person's stored outcome.

Where an id is made (what an operator searches for):
- the Efficy webhook: one id per queued person, `<API request id>/<n>` (n = 1.. in the order of the request),
  so the id of one change also names its request: `correlation_id = "<id>"` finds one change,
  `correlation_id like "<request id>/"` every change of one webhook call;
- the opt-out route: the API request id (one opt-out message per request);
- a full sync: its run id, which every step payload and page item already carries.

How it travels: the SQS message attribute `correlation_id` (and the contact change's body, so a copy moved by
a redrive or re-enqueued keeps it), then, while the worker handles that one record, a context variable that
the logger (a thread-safe key, removed when the record is done: a batch holds several records), the trace (an
annotation on the record's subsegment) and the person store (`correlation_id` of the stored outcome) read.

This module is free of powertools: the logger and tracer hooks are installed by `efficy_sync.observability`.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: the SQS message attribute and the log / trace / stored key
KEY = "correlation_id"
#: longest id kept (an API Gateway request id is 36 characters; a run id is shorter)
MAX_LENGTH = 128

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("efficy_sync_correlation_id", default=None)
#: called with (id or None) when a scope starts and ends: observability puts it on log lines and the trace
_hooks: list[Callable[[str | None], Any]] = []


def current() -> str | None:
    """The id of the change being handled in this thread (None outside a scope)."""
    return _current.get()


def new_id(prefix: str = "") -> str:
    """A fresh id where nothing upstream gave one (a message queued without an id, the CLI)."""
    return f"{prefix}{uuid.uuid4()}"


def record_id(request_id: str, n: int) -> str:
    """The id of the n-th person (1-based) queued by one webhook request."""
    return f"{request_id}/{n}"[:MAX_LENGTH]


def message_attributes(correlation_id: str | None) -> dict[str, dict[str, str]]:
    """SQS MessageAttributes carrying the id (none when there is no id)."""
    if not correlation_id:
        return {}
    return {KEY: {"DataType": "String", "StringValue": correlation_id[:MAX_LENGTH]}}


def from_sqs_record(record: Mapping[str, Any]) -> str | None:
    """The id an SQS record (Lambda's event shape) carries as a message attribute, if any."""
    attribute = (record.get("messageAttributes") or {}).get(KEY) or {}
    value = attribute.get("stringValue") or attribute.get("StringValue")
    return str(value)[:MAX_LENGTH] if value else None


def add_hook(hook: Callable[[str | None], Any]) -> None:
    """Called with the id when a scope begins and with the outer id (or None) when it ends."""
    if hook not in _hooks:
        _hooks.append(hook)


@contextmanager
def scope(correlation_id: str | None) -> Iterator[str | None]:
    """Everything done inside (in this thread, and in threads started with `contextvars.copy_context`) belongs
    to the change `correlation_id`; on exit the outer id (usually none) is back, so nothing leaks to the next
    record of a batch, even when the record failed."""
    outer = _current.get()
    token = _current.set(correlation_id)
    for hook in _hooks:
        hook(correlation_id)
    try:
        yield correlation_id
    finally:
        _current.reset(token)
        for hook in _hooks:
            hook(outer)
