"""What both public routes need from an API Gateway proxy event: the raw body bytes the sender sent.

API Gateway hands a body that is not UTF-8 text over base64-encoded and says so in `isBase64Encoded`; a route
that signed or parsed the base64 text instead would answer "wrong signature" to a correctly signed call. Light on
purpose (standard library only): both ingest Lambdas import it on their cold path.
"""

from __future__ import annotations

import base64
import binascii


class BodyEncodingError(ValueError):
    """`isBase64Encoded` is set but the body is not base64: answered 400 naming the body."""


def request_body(body: str | None, is_base64_encoded: bool | None) -> bytes:
    """The body's original bytes (b"" for none)."""
    if not body:
        return b""
    if is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BodyEncodingError("body: is not valid base64 although isBase64Encoded is set") from None
    return body.encode("utf-8", "surrogatepass")
