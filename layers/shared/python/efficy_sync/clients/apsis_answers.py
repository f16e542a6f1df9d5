"""Which of APSIS One's success answers prove that a write was applied (contracts/apsis-one.md section 5).

APSIS lists 200/201/202/204/207 as success codes. For a write whose values the caller records as sent (the
person's state then plans nothing for them again), that is not enough:

- 207 Multi-Status says some of the body was applied and some refused. Read as done, the refused part was
  recorded as sent and the next diff sent nothing: silent drift. It is `PartlyApplied`: not recorded as sent,
  marked unknown (`maybe_applied`: APSIS may hold part of it), planned again by the next sync, the person's
  outcome naming it. Never "no such profile", never a reason to delete, untag or opt out.
- a 2xx whose body carries a problem (`errors` listed, or a `status` of 400 or more) says the same, whatever
  its code: read the same way.
- a problem status in that body that is about the integration, not the person's values (401/403: credentials or
  permissions; 429: the account's rate; 5xx: APSIS itself) is raised as that failure (AuthError, RateLimited,
  ApsisUnavailable), as the same status on the response would be: every person would meet it alike, so it is
  never recorded on the person nor acknowledged; the change is retried and, if it lasts, alarmed.
- 202 Accepted on a PATCH, create or delete is taken as done: APSIS documents it as success (accepted for
  processing), the call is idempotent, and a 202 read as unproven would fail and re-send every person at every
  sync if APSIS answered its writes that way. (A consent's 202 is read back instead: ApsisClient.set_consent.)
"""

from __future__ import annotations

import json
from typing import Any

import requests

from efficy_sync.clients.errors import ApiError, ApsisUnavailable, AuthError, RateLimited, RejectedValue
from efficy_sync.pii import redact_text

MULTI_STATUS = 207
#: what a poll (an import's status, an export's download) answers while the work runs, beside the documented 404
#: of the export: 202 Accepted or 204 with nothing yet, as asynchronous APIs commonly do; never the result itself
IN_PROGRESS_ANSWERS = frozenset({202, 204})


class PartlyApplied(RejectedValue):
    """APSIS One answered a write 207 (or a 2xx listing errors): part of it may be applied, part not. About this
    person's values as far as we can tell (the rest of the person's calls, the withdrawals at least, still go out),
    recorded on the person, never as sent: marked unknown, so the next sync sends them again."""

    category = "partly_applied"
    maybe_applied = True


def _body(response: requests.Response) -> dict[str, Any] | None:
    try:
        body: Any = json.loads(response.content.decode("utf-8-sig")) if response.content else None
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _status(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 400 else None


def _problem_in(response: requests.Response) -> str | None:
    """What a 2xx body says failed: its listed `errors` or a problem's status and title; None when nothing."""
    body = _body(response)
    if body is None:
        return None
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return f"{len(errors)} error(s) listed"
    status = _status(body.get("status"))
    if status is not None:
        return f"a problem of status {status}: {redact_text(str(body.get('title') or '')[:80], hint=False)}".strip(": ")
    return None


def _integration_failure(response: requests.Response) -> type[ApiError] | None:
    """The integration's failure a 2xx body names (its own problem status, or that of any error it lists): 401 or
    403 AuthError, 429 RateLimited, 5xx ApsisUnavailable; None when it names none (the person's values)."""
    body = _body(response)
    if body is None:
        return None
    errors = body.get("errors")
    listed = [e.get("status") for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    for status in (_status(s) for s in [body.get("status"), *listed]):
        if status in (401, 403):
            return AuthError
        if status == 429:
            return RateLimited
        if status is not None and status >= 500:
            return ApsisUnavailable
    return None


def unproven_write(response: requests.Response, kind: str) -> str | None:
    """Why the 2xx `response` to the write `kind` does not prove it applied (None: it does)."""
    problem = _problem_in(response)
    if response.status_code == MULTI_STATUS:
        return f"APSIS {kind}: 207 Multi-Status, applied in part at most" + (f" ({problem})" if problem else "")
    if problem:
        return f"APSIS {kind}: {response.status_code} whose body names {problem}"
    return None


def check_applied(response: requests.Response, kind: str, *, error: type[ApiError] = PartlyApplied) -> None:
    """Raises `error` (maybe_applied) when the answer does not prove the write applied; see the module docstring.
    `error`: PartlyApplied for a person's values; an outage (ApsisUnavailable: retried) where the call is no
    person's value (a delete, an import's creation). A failure of the integration the body names wins over it."""
    reason = unproven_write(response, kind)
    if reason is None:
        return
    error = _integration_failure(response) or error
    failure = error(
        f"{reason}; not recorded as sent, sent again by the next sync", status=response.status_code, detail=reason
    )
    failure.maybe_applied = True
    raise failure


#: members of a problem+json body (RFC 9457), the form APSIS answers errors in (contracts/apsis-one.md section 5)
PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail"})


def problem_answer(response: requests.Response) -> bool:
    """Whether the body is APSIS's own problem+json: a JSON object with one of its members. A gateway's JSON
    (`{"message": "Not Found"}`), an HTML or XML page or an empty body is not."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and not PROBLEM_MEMBERS.isdisjoint(body)
