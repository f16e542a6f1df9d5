"""The hook `clients.http` calls around each API call to open a trace subsegment.

A module of its own, free of imports, so `efficy_sync.tracing` can install the hook without loading requests
(the webhook handler imports neither requests nor boto3 until it needs them: a cold start it answers 401 from
stays light).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

#: (api, method) -> a context manager giving a dict the caller fills with the status and attempts.
#: Set by efficy_sync.tracing when a Lambda traces; None for the CLI and tests.
call_span: Callable[[str, str], AbstractContextManager[dict[str, Any]]] | None = None
