"""Thread-safety fix for moto's DynamoDB, applied by the local stack only.

moto's server answers every request on its own thread, but its DynamoDB backend is plain dicts with no lock.
TransactWriteItems deep-copies each table it writes to (to roll back on a failed condition) while other
threads put into the same table: the copy fails with `RuntimeError: dictionary changed size during
iteration` (a 500 and a traceback on the console), and a rollback restores a copy taken before another
thread's write, which silently loses that write. Scan and Query iterate the same dicts. Real DynamoDB is
neither, so the local stack serialises moto's DynamoDB requests, parsing and serialising of the response
included, behind one lock. It costs no throughput worth having: the backend is pure Python in memory, so
the GIL ran those requests one at a time anyway.

SSM, likewise, behind a lock of its own: PutParameter without Overwrite creates a parameter only if it is
absent, atomically on AWS, and the APSIS token's refresh lease relies on it (efficy_sync/apsis_tokens.py);
moto checks for the parameter and adds it several statements apart, so two requests could both create it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

DYNAMODB_LOCK = threading.RLock()


SSM_LOCK = threading.RLock()


def applied() -> bool:
    """Whether moto's DynamoDB and SSM handlers are serialised in this process."""
    return all(getattr(handler.call_action, "_efficy_sync_serialised", False) for handler in _handlers())


def apply() -> None:
    """Wrap moto's DynamoDB request handler in DYNAMODB_LOCK and its SSM handler in SSM_LOCK (idempotent)."""
    for handler, lock in zip(_handlers(), (DYNAMODB_LOCK, SSM_LOCK), strict=True):
        _serialise(handler, lock)


def _handlers() -> tuple[Any, Any]:
    from moto.dynamodb.responses import DynamoHandler
    from moto.ssm.responses import SimpleSystemManagerResponse

    return DynamoHandler, SimpleSystemManagerResponse


def _serialise(handler: Any, lock: Any) -> None:
    original = handler.call_action
    if getattr(original, "_efficy_sync_serialised", False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with lock:
            return original(self)

    call_action._efficy_sync_serialised = True  # type: ignore[attr-defined]
    handler.call_action = call_action
