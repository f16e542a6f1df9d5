"""The EfficySession cookie of one Efficy client's requests Session, shared by every thread that uses the client.

Efficy keeps a server session per cookie and answers 401 (or a "session timeout" error inside a 200) once it
has timed out; the client then forgets the cookie, and its next call logs on afresh with the API key. The
threads of a full-sync page share the client, so a timeout reaches them all at once, and each forgot "the"
cookie: two at once both cleared it, and the second clear raised KeyError out of a person's sync (the cookie
jar's `clear` of a cookie already gone); one refused a moment later cleared the fresh cookie another thread had
just got, and logged on again. So a refused call forgets only the cookie it was sent with, under a lock.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from http.cookiejar import Cookie

    import requests

SESSION_COOKIE = "EfficySession"


class SessionCookie:
    """Forgets the session cookie of `session` that a refused call was sent with (thread-safe)."""

    def __init__(self, session: requests.Session) -> None:
        self._session = session
        self._lock = threading.Lock()

    def drop(self, refused: Any) -> None:
        """Forget the cookie `refused` (the requests Response that said the session is over) was sent with; a
        newer one another thread got meanwhile is kept. Without its request (a test double), any is forgotten."""
        sent = _sent_value(refused)
        jar = self._session.cookies
        # the jar's own lock too: another thread's answer adds (or expires) cookies under it while this reads
        with self._lock, getattr(jar, "_cookies_lock", contextlib.nullcontext()):
            for cookie in cast("list[Cookie]", list(jar)):  # a CookieJar yields cookies
                if cookie.name == SESSION_COOKIE and (sent is None or cookie.value == sent):
                    with contextlib.suppress(KeyError):  # gone meanwhile: what was wanted
                        jar.clear(cookie.domain, cookie.path, cookie.name)


def _sent_value(refused: Any) -> str | None:
    """The session cookie's value in the request behind `refused`: "" when it sent none, None when unknown."""
    headers = getattr(getattr(refused, "request", None), "headers", None)
    if headers is None:
        return None
    for part in str(headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return ""
