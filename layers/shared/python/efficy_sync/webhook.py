"""Efficy's outgoing webhook: authentication and the payload model.

How a call proves it comes from Efficy is a per-integration setting (contracts/efficy.md §7 and §10):
- `url_token`: the webhook secret as the query parameter `token` of the URL registered in Efficy. Efficy's
  SYS_WEBHOOKS calls are unsigned and carry no header we choose, so this is the mode for a plain Efficy 12.
- `hmac_body`: `sha256=<hex HMAC-SHA256(secret, raw body)>` in a header (the 12.1 generic connector; APSIS's
  implementation of that spec names it `X-Justin-Signature`). No timestamp is signed.
- `hmac`: our own scheme for a proxy we control, HMAC of "<timestamp>.<raw body>" with the timestamp bounded.
- `header`: Efficy 12.0's static shared secret in a header.
Every comparison is constant-time. A replayed call (possible in every mode but `hmac`) only makes the worker
refetch the persons it names from Efficy: it changes nothing that Efficy does not already say.

The payload accepts only what Efficy sends: keys are whole JSON numbers in Efficy's key range, the operation
one of three words, the date an ISO 8601 date-time. Error texts name the field, never echo its value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError

CONTACT_TABLE_ID = 11000  # Efficy's table id of Cont
#: Efficy keys are positive whole numbers; its JSON-RPC clients read them as doubles (contracts/efficy.md §3),
#: so no key Efficy really sends is above 2**53 - 1. A larger number cannot name a person exactly.
MAX_KEY = 2**53 - 1
URL_TOKEN_PARAMETER = "token"
MODES = ("url_token", "hmac_body", "hmac", "header")
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")
#: ISO 8601 date-time as Efficy writes it: a date, a time, optional fraction and offset (bounded length).
_ISO_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?$"
)


class WebhookAuthError(Exception):
    """Missing or wrong credentials: answered 401, nothing enqueued."""


class WebhookPayloadError(Exception):
    """Malformed body: answered 400 with the problem named, nothing enqueued."""


def normalise_date(value: str) -> str:
    """An ISO 8601 date-time as a UTC instant with milliseconds ('...T10:00:00.000Z'), so two dates compare as
    instants (a text comparison of '+02:00' and 'Z' forms does not). Raises ValueError without the value."""
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO 8601 date-time such as 2024-05-01T10:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(",", "."))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time such as 2024-05-01T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Efficy's dates without an offset: read as UTC
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("must be an ISO 8601 date-time within years 1 to 9999 in UTC") from None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookRecord(BaseModel):
    """One changed record. Only table, key, operation and date are used: the worker refetches the person, so the
    changed values (`fields`) only feed the de-duplication fingerprint and never travel on the queue.

    `date` has no upper bound on purpose: it is only part of a message's de-duplication identity, and nothing
    compares it with stored stamps (the worker orders by the D_CHANGE it refetches), so a date in the future
    cannot hold back a later change, while refusing it would make Efficy drop the real change of a CRM whose
    clock runs ahead of ours."""

    model_config = ConfigDict(extra="ignore")

    table: StrictInt
    # Strict: true, "2" or 2.0 are not what Efficy sends, and a key must never be guessed from another type.
    key: StrictInt = Field(gt=0, le=MAX_KEY)
    operation: Literal["Create", "Update", "Delete"]
    user: str | None = None
    subject: str | None = None
    fields: dict[str, object] = Field(default_factory=dict)
    date: Annotated[str, Field(max_length=40), AfterValidator(normalise_date)]


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
    """The `hmac` mode's signature: HMAC-SHA256 of "<timestamp>.<raw body>"."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign_body(secret: str, body: bytes) -> str:
    """The `hmac_body` mode's signature (the 12.1 generic connector): HMAC-SHA256 of the raw body alone."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that refuses an empty expected secret (a missing secret never matches)."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _require_secret(given: str | None, secret: str, *, missing: str, wrong: str) -> None:
    """The two modes that send the secret itself (as a header or as a query parameter) check it alike."""
    if not given:
        raise WebhookAuthError(f"missing {missing}")
    if not _same(given, secret):
        raise WebhookAuthError(f"wrong {wrong}")


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    mode: str = "hmac",
    query: Mapping[str, str] | None = None,
    signature_header: str = "X-Efficy-Signature",
    timestamp_header: str = "X-Efficy-Timestamp",
    secret_header: str = "X-Efficy-Webhook-Secret",
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    """Raise WebhookAuthError unless the request carries valid credentials for this integration.

    The error text names what is missing or wrong (a header or parameter name), never a value."""
    if mode == "url_token":
        name = f"{URL_TOKEN_PARAMETER} query parameter"
        _require_secret((query or {}).get(URL_TOKEN_PARAMETER), secret, missing=name, wrong=name)
        return
    if mode == "header":
        _require_secret(_header(headers, secret_header), secret, missing=f"{secret_header} header", wrong=secret_header)
        return
    if mode == "hmac_body":
        signature = _header(headers, signature_header)
        if not signature:
            raise WebhookAuthError(f"missing {signature_header} header")
        if not _same(signature.strip().lower(), sign_body(secret, body)):
            raise WebhookAuthError(f"wrong {signature_header}")
        return
    if mode != "hmac":
        raise WebhookAuthError(f"unknown authentication mode; expected one of {', '.join(MODES)}")
    signature = _header(headers, signature_header)
    timestamp = _header(headers, timestamp_header)
    if not signature:
        raise WebhookAuthError(f"missing {signature_header} header")
    if not timestamp:
        raise WebhookAuthError(f"missing {timestamp_header} header")
    if not _UNIX_SECONDS.match(timestamp):
        raise WebhookAuthError(f"{timestamp_header} is not unix seconds")
    ts = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_seconds:
        raise WebhookAuthError(f"stale {timestamp_header}: more than {tolerance_seconds}s from now")
    if not _same(signature, sign(secret, timestamp, body)):
        raise WebhookAuthError(f"wrong {signature_header}")


def parse(body: bytes) -> WebhookPayload:
    """Validate the whole payload; the error names the first bad field path (records[3].key), never a value."""
    if not body:
        raise WebhookPayloadError("empty body: expected a JSON object with records[]")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookPayloadError("body: is not JSON text (UTF-8)") from None
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_context=False)[:5]:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{path or 'body'}: {message}")
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise WebhookPayloadError("; ".join(problems) + more) from None
