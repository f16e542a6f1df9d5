"""How a call of Efficy's outgoing webhook proves it comes from Efficy (the payload model is webhook.py).

A per-integration setting (contracts/efficy.md §7 and §10):
- `url_token`: the webhook secret as the query parameter `token` of the URL registered in Efficy. Efficy's
  SYS_WEBHOOKS calls are unsigned and carry no header we choose, so this is the mode for a plain Efficy 12.
- `hmac_body`: `sha256=<hex HMAC-SHA256(secret, raw body)>` in a header (the 12.1 generic connector; APSIS's
  implementation of that spec names it `X-Justin-Signature`). No timestamp is signed.
- `hmac`: our own scheme for a proxy we control, HMAC of "<timestamp>.<raw body>" with the timestamp bounded.
- `header`: Efficy 12.0's static shared secret in a header.
Every comparison is constant-time. A replayed call (possible in every mode but `hmac`) only makes the worker
refetch the persons it names from Efficy: it changes nothing that Efficy does not already say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

URL_TOKEN_PARAMETER = "token"
MODES = ("url_token", "hmac_body", "hmac", "header")
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")


class WebhookAuthError(Exception):
    """Missing or wrong credentials: answered 401, nothing enqueued."""


class SecretNotSet(RuntimeError):
    """The route's secret in Secrets Manager is empty: the integration's failure (answered 503 and logged as an
    error, so the caller sends again once it is set), never the caller's. With an empty key anyone can compute a
    valid HMAC signature, so the check must not run at all."""


def require_secret_set(secret: str | None, what: str) -> None:
    if not secret or not secret.strip():
        raise SecretNotSet(f"the {what} in Secrets Manager is empty: set it (README, Secrets)")


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


def _signature_ok(given: str, secret: str, message: bytes) -> bool:
    """An HMAC-SHA256 signature of `message` in any of the encodings a sender may use: the header's exact form
    is not published (contracts/efficy.md: `sha256=<hex>` is inferred for the 12.1 connector from APSIS's own
    sender, and assumed for our `hmac` scheme), so `sha256=<hex>` (either case: .NET's Convert.ToHexString
    writes upper case), a bare hex digest, and base64 of the digest, with or without the prefix, are all the same
    HMAC, each compared in constant time. A refusal costs the batch's changes until a full sync."""
    text = given.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:].strip()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    if not secret:
        return False
    hex_ok = hmac.compare_digest(text.lower().encode(), digest.hex().encode())
    b64_ok = hmac.compare_digest(text.encode(), base64.b64encode(digest))
    return hex_ok or b64_ok


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
    require_secret_set(secret, "webhook secret")
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
        if not _signature_ok(signature, secret, body):
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
    if not _signature_ok(signature, secret, timestamp.encode() + b"." + body):
        raise WebhookAuthError(f"wrong {signature_header}")
