"""boto3 clients, created on first use and shared by every call in a warm Lambda.

boto3 is imported lazily: a handler that answers a bad request never pays for it (cold-start time is part of
the product). Clients honour the standard environment (AWS_REGION, AWS_ENDPOINT_URL for the local stack).

A client is built once, under a lock, with its modelled exceptions loaded before any thread sees it: botocore
builds `client.exceptions` on first access without a lock, so two threads touching it first at once got two
sets of classes, and the `except ddb.exceptions.ConditionalCheckFailedException` of one of them no longer
matched what the client raised (a refused conditional write escaped as a failure: CI, stop 42).

Client-side parameter validation is off: it was 6 % of a full-sync page's CPU (py-spy; most of it checking the
50-item state transactions), every request is built by our code, and the services refuse a malformed request
themselves (a ClientError, handled like any refusal).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def _shared(kind: str, service: str, build: Any) -> Any:
    found = _clients.get((kind, service))
    if found is not None:
        return found
    with _lock:  # boto3's default session is not thread-safe while it builds a client
        found = _clients.get((kind, service))
        if found is None:
            found = build()
            found.exceptions  # noqa: B018 - loaded here, once, before another thread can race to build it
            _clients[(kind, service)] = found
        return found


def client(service: str) -> Any:
    def build() -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service, config=Config(retries={"mode": "adaptive", "max_attempts": 5}, parameter_validation=False)
        )

    return _shared("default", service, build)


def brief_client(service: str) -> Any:
    """For a call made on the way out of an invocation (a failed message's retry delay), which must fit in the
    Lambda's few reserved seconds: 2 s to connect, 3 s to answer, one retry (botocore's defaults: 60 s each)."""

    def build() -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            config=Config(
                connect_timeout=2,
                read_timeout=3,
                retries={"mode": "standard", "max_attempts": 2},
                parameter_validation=False,
            ),
        )

    return _shared("brief", service, build)


def reset_clients() -> None:
    """Tests and the local stack change the endpoint; forget clients built for the old one."""
    with _lock:
        _clients.clear()


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
    Told by name, so botocore is not imported for it. Our own batch helpers' "still unprocessed after every
    retry" (store.dynamo, marked `throttled`) is throttling too."""
    if getattr(type(exc), "throttled", False) is True:
        return True
    if not type(exc).__module__.startswith("botocore"):
        return False
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _TRANSIENT_CODES or int(status) >= 500
    return type(exc).__name__ in _TRANSIENT_NETWORK
