"""The handlers' log keys, one set per invocation, when every function shares this one process.

On Lambda a process is one function and runs one invocation at a time, so the keys a handler appends to the
shared powertools Logger (`inject_lambda_context`'s function_name and request id, `append_keys(run_id=...,
page=...)`) are that invocation's. The local stack runs every function's invocations side by side in one process,
and those keys are the Logger's, so they leaked: a page's "page done" line named the cleanup function, a
webhook's the page worker. `isolate()` makes append_keys/remove_keys write powertools' context-local keys (its
thread_safe_* methods, which the formatter merges into every line), and `fresh()` gives each invocation none to
start with. A pool thread gets the keys its function appended (`for_pool`), as on Lambda, where they are the
process's; the keys appended thread-locally on purpose (a change's correlation id) are not carried, so code that
forgets to pass its correlation id to its threads shows it here as it would there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

#: the names of the keys this context's code appended with append_keys (process-wide on Lambda)
_APPENDED: ContextVar[frozenset[str]] = ContextVar("efficy_sync_local_appended_log_keys", default=frozenset())


@cache
def _keys() -> ContextVar[dict[str, Any]]:
    """Looked up once: a full sync page calls this for each of its persons (an import statement each time was
    2 % of the local stack's CPU in a 10,000-person first load)."""
    from aws_lambda_powertools.logging.formatter import THREAD_LOCAL_KEYS

    return THREAD_LOCAL_KEYS


def isolate() -> None:
    """Route the Logger's append_keys/remove_keys to its context-local keys, remembering which were appended so.
    Idempotent."""
    from aws_lambda_powertools import Logger

    if getattr(Logger.append_keys, "isolated", False):
        return

    def append_keys(self: Logger, **additional_keys: object) -> None:
        self.thread_safe_append_keys(**additional_keys)
        _APPENDED.set(_APPENDED.get() | frozenset(additional_keys))

    def remove_keys(self: Logger, keys: Any) -> None:
        gone = frozenset(keys)  # a new dict: powertools' own removal edits one another context may share
        _keys().set({name: value for name, value in _keys().get().items() if name not in gone})

    append_keys.isolated = True  # type: ignore[attr-defined]
    Logger.append_keys = append_keys  # type: ignore[method-assign]
    Logger.remove_keys = remove_keys  # type: ignore[method-assign]


@contextmanager
def fresh() -> Iterator[None]:
    """An invocation's log keys: none from another invocation, and none left behind for the next."""
    keys, appended = _keys().set({}), _APPENDED.set(frozenset())
    try:
        yield
    finally:
        _keys().reset(keys)
        _APPENDED.reset(appended)


def for_pool() -> Callable[[], None]:
    """Taken in the submitting thread: sets, in a pool thread, the keys its function appended."""
    appended = _APPENDED.get()
    carried = {name: value for name, value in _keys().get().items() if name in appended}

    def install() -> None:
        if carried:
            _keys().set(dict(carried))
            _APPENDED.set(appended)

    return install
