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


@cache
def brief_client(service: str) -> Any:
    """For a call made on the way out of an invocation (a failed message's retry delay), which must fit in the
    Lambda's few reserved seconds: 2 s to connect, 3 s to answer, one retry (botocore's defaults: 60 s each)."""
    with _lock:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            config=Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2}),
        )


def reset_clients() -> None:
    """Tests and the local stack change the endpoint; forget clients built for the old one."""
    client.cache_clear()
    brief_client.cache_clear()


#: AWS error codes that retrying later can fix: throttling, the service's own failures
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "SlowDown",
        "RequestThrottled",
        "TooManyRequestsException",
    }
)
#: botocore's network errors (no answer at all)
_TRANSIENT_NETWORK = frozenset(
    {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"}
)


def transient_aws_error(exc: BaseException) -> bool:
    """An AWS SDK error that retrying later can fix, once boto3's own retries ran out: a DynamoDB table or S3
    throttled for a while, a 5xx, no answer. The full-sync tasks raise it as TransientError, which the state
    machine retries; raised as is, a throttled state table failed a page (or a step, and so the run) at once.
    Told by name, so botocore is not imported for it."""
    if not type(exc).__module__.startswith("botocore"):
        return False
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _TRANSIENT_CODES or int(status) >= 500
    return type(exc).__name__ in _TRANSIENT_NETWORK
