"""Whole lines on the local stack's stdout and stderr, whichever thread writes them.

Every function of the local stack runs in the `local up` process, on threads, and writes its log lines to the
same stdout; on Lambda a process is one function running one invocation at a time. `print` writes its text and its
newline in two calls, so a line another thread wrote between the two was glued to the first: powertools prints
each EMF metrics document with print, and a webhook's "change queued" line ended up inside a metrics line, which
no JSON reader parses (a search of the log for that change found nothing: make test,
tests/e2e/test_correlation.py). Here each thread's text is held until its newline, and whole lines go out in one
write under one lock that stdout and stderr share (both are often the same file).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class WholeLines:
    """A text stream that writes only whole lines to `target`, each thread's own."""

    def __init__(self, target: TextIO, lock: threading.Lock) -> None:
        self._target = target
        self._lock = lock
        self._held = threading.local()

    def write(self, text: str) -> int:
        held = getattr(self._held, "text", "") + text
        lines, newline, rest = held.rpartition("\n")
        self._held.text = rest
        if newline:
            with self._lock:
                self._target.write(lines + newline)
                self._target.flush()
        return len(text)

    def flush(self) -> None:
        """An explicit flush sends this thread's unfinished line too (a prompt, a progress dot)."""
        rest = getattr(self._held, "text", "")
        self._held.text = ""
        with self._lock:
            if rest:
                self._target.write(rest)
            self._target.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer: the target's
        return getattr(self._target, name)


def install() -> None:
    """stdout and stderr of this process write whole lines from now on (before any logging handler is made:
    a handler keeps the stream it was given)."""
    if isinstance(sys.stdout, WholeLines):
        return
    lock = threading.Lock()
    sys.stdout = WholeLines(sys.stdout, lock)  # type: ignore[assignment]
    sys.stderr = WholeLines(sys.stderr, lock)  # type: ignore[assignment]
