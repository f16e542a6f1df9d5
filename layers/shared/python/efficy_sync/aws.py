"""boto3 clients, created on first use and shared by every call in a warm Lambda.

boto3 is imported lazily: a handler that answers a bad request never pays for it (cold-start time is part of
the product). Clients honour the standard environment (AWS_REGION, AWS_ENDPOINT_URL for the local stack).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

_lock = threading.Lock()


@cache
def client(service: str) -> Any:
    with _lock:  # boto3's default session is not thread-safe while it builds a client
        import boto3
        from botocore.config import Config

        return boto3.client(service, config=Config(retries={"mode": "adaptive", "max_attempts": 5}))


def reset_clients() -> None:
    """Tests and the local stack change the endpoint; forget clients built for the old one."""
    client.cache_clear()
