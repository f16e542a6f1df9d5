"""X-Ray tracing of every function (powertools Tracer), with the APSIS One and Efficy calls as subsegments.

Why on (measured as bench/coldstart.py does, see README "Operations"): the X-Ray SDK imports botocore, which
every invocation loads for its first AWS call anyway, so a cold start (import plus the first AWS client) grows
by 9 % at most, once per container; in return a trace shows where an invocation spent its time: each APSIS /
Efficy call (retries included) with its status, and the AWS calls.

What a trace may hold: no URL, no body, no response, no exception text. APSIS paths carry the person key
(`/profiles/{key}/...`), the `url_token` webhook carries its secret in the query, and API answers and error
texts can quote an e-mail address, so:
- `requests` is not patched (its subsegments record the full URL): `clients.http` opens its own subsegment
  per call, named after the API, with the method, the final status and the number of attempts;
- the handler subsegment records neither the response nor the error (`capture_response/error=False`);
- botocore is patched (AWS calls name tables and queues, nothing of a person).
The correlation id of the change (efficy_sync.correlation) is an annotation: X-Ray can search by it.

Locally (moto, no X-Ray daemon) POWERTOOLS_TRACE_DISABLED is set and nothing is emitted; outside Lambda
powertools disables tracing by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Tracer

from . import correlation
from .clients import spans

SERVICE = "efficy-sync"
#: AWS SDK calls become subsegments; requests is left alone on purpose (see the module docstring)
PATCHED_MODULES = ("botocore",)

tracer = Tracer(service=SERVICE, patch_modules=PATCHED_MODULES)


def capture_handler(handler: Any) -> Any:
    """`tracer.capture_lambda_handler` that records neither the response nor the exception (personal data)."""
    return tracer.capture_lambda_handler(handler, capture_response=False, capture_error=False)


@contextmanager
def _subsegment(name: str) -> Iterator[Any]:
    """`in_subsegment`, except that an exception leaving it is recorded by its class alone. The SDK records
    str(exception) as the subsegment's cause: requests' text holds the URL (an APSIS path holds the person key)
    and pydantic's echoes the values (an opted-out address), and a trace holds neither (module docstring)."""
    failure: Exception | None = None
    with tracer.provider.in_subsegment(name) as subsegment:
        try:
            yield subsegment
        except Exception as exc:
            failure = exc
            subsegment.add_fault_flag()  # type: ignore[attr-defined]  # the X-Ray SDK subsegment powertools yields
            subsegment.put_annotation("error", type(exc).__name__)
    if failure is not None:
        raise failure


@contextmanager
def _call_subsegment(api: str, method: str) -> Iterator[dict[str, Any]]:
    """One APSIS / Efficy call (its retries included) as a subsegment; `clients.http` fills `info`."""
    info: dict[str, Any] = {}
    with _subsegment(api) as subsegment:
        subsegment.namespace = "remote"  # X-Ray field the SDK sets but does not declare
        subsegment.put_annotation("api", api)
        subsegment.put_annotation("method", method)
        cid = correlation.current()
        if cid:
            subsegment.put_annotation(correlation.KEY, cid)
        try:
            yield info
        finally:
            if "status" in info:
                subsegment.put_annotation("status", int(info["status"]))
                subsegment.put_metadata("attempts", int(info.get("attempts", 1)), SERVICE)
            if info.get("error"):
                subsegment.put_annotation("error", str(info["error"]))  # an exception's class name only


@contextmanager
def record(correlation_id: str | None, name: str = "## record") -> Iterator[str | None]:
    """One change of a batch: its correlation id on every log line (efficy_sync.observability's hook), on a
    subsegment of its own (annotation), and on the person's stored outcome; all removed when it ends."""
    with correlation.scope(correlation_id):
        if tracer.disabled:
            yield correlation_id
            return
        with _subsegment(name) as subsegment:
            if correlation_id:
                subsegment.put_annotation(correlation.KEY, correlation_id)
            yield correlation_id


def annotate(correlation_id: str | None) -> None:
    """The correlation id on the current (handler) subsegment, for an invocation that serves one change."""
    if correlation_id and not tracer.disabled:
        tracer.put_annotation(correlation.KEY, correlation_id)


if not tracer.disabled:
    spans.call_span = _call_subsegment
