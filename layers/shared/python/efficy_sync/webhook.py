"""Efficy's outgoing webhook: authentication and the payload model.

Efficy does not publish its signature format (contracts/efficy.md §7), so header names and the mode are
per-integration settings. `hmac` signs "<timestamp>.<raw body>" and bounds the timestamp to stop replays;
`header` is Efficy 12.0's static shared secret. Comparisons are constant-time either way.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONTACT_TABLE_ID = 11000  # Efficy's table id of Cont


class WebhookAuthError(Exception):
    """Missing or wrong credentials: answered 401, nothing enqueued."""


class WebhookPayloadError(Exception):
    """Malformed body: answered 400 with the problem named, nothing enqueued."""


class WebhookRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    table: int
    key: int = Field(gt=0)
    operation: Literal["Create", "Update", "Delete"]
    user: str | None = None
    subject: str | None = None
    fields: dict[str, object] = Field(default_factory=dict)
    date: str = Field(min_length=1)


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    database: str | None = None
    version: str | None = None
    records: list[WebhookRecord]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    mode: str = "hmac",
    signature_header: str = "X-Efficy-Signature",
    timestamp_header: str = "X-Efficy-Timestamp",
    secret_header: str = "X-Efficy-Webhook-Secret",
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    """Raise WebhookAuthError unless the request carries valid credentials for this integration."""
    if mode == "header":
        given = _header(headers, secret_header)
        if not given:
            raise WebhookAuthError(f"missing {secret_header} header")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise WebhookAuthError(f"wrong {secret_header}")
        return
    signature = _header(headers, signature_header)
    timestamp = _header(headers, timestamp_header)
    if not signature:
        raise WebhookAuthError(f"missing {signature_header} header")
    if not timestamp:
        raise WebhookAuthError(f"missing {timestamp_header} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise WebhookAuthError(f"{timestamp_header} is not unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_seconds:
        raise WebhookAuthError(f"stale {timestamp_header}: more than {tolerance_seconds}s from now")
    if not hmac.compare_digest(signature.encode(), sign(secret, timestamp, body).encode()):
        raise WebhookAuthError(f"wrong {signature_header}")


def parse(body: bytes) -> WebhookPayload:
    """Validate the whole payload; the error names the first bad field path (records[3].key)."""
    if not body:
        raise WebhookPayloadError("empty body: expected a JSON object with records[]")
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            problems.append(f"{path or 'body'}: {err['msg']}")
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise WebhookPayloadError("; ".join(problems) + more) from None
