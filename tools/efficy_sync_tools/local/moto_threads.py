"""Thread-safety fix for moto's DynamoDB, applied by the local stack only.

moto's server answers every request on its own thread, but its DynamoDB backend is plain dicts with no lock.
TransactWriteItems deep-copies each table it writes to (to roll back on a failed condition) while other
threads put into the same table: the copy fails with `RuntimeError: dictionary changed size during
iteration` (a 500 and a traceback on the console), and a rollback restores a copy taken before another
thread's write, which silently loses that write. Scan and Query iterate the same dicts. Real DynamoDB is
neither, so the local stack serialises moto's DynamoDB requests, parsing and serialising of the response
included, behind one lock. It costs no throughput worth having: the backend is pure Python in memory, so
the GIL ran those requests one at a time anyway.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

DYNAMODB_LOCK = threading.RLock()


def applied() -> bool:
    """Whether moto's DynamoDB handler is serialised in this process."""
    from moto.dynamodb.responses import DynamoHandler

    return bool(getattr(DynamoHandler.call_action, "_efficy_sync_serialised", False))


def apply() -> None:
    """Wrap moto's DynamoDB request handler in DYNAMODB_LOCK (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_efficy_sync_serialised", False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with DYNAMODB_LOCK:
            return original(self)

    call_action._efficy_sync_serialised = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
