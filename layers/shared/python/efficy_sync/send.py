"""Sending a person's planned operations to APSIS One in as few calls as APSIS allows.

The plan (person_plan.py) stays one operation per APSIS concept (create, attributes, consents, tags), because the
stored state records each of them; here a create followed by the attribute PATCH of the same profile goes out
as one v1 attribute PATCH, which APSIS documents creates a missing profile (`ApsisClient.
create_with_attributes`). That call is atomic: either both operations reached APSIS or neither did, so what is
reported as sent stays true. `combine=False` (config `apsis.create_with_attribute_patch: false`) keeps the
older two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .clients.apsis_answers import PartlyApplied
from .clients.apsis_scope import confirm_scope
from .clients.errors import (
    ApiError,
    Conflict,
    OutOfTime,
    RateLimited,
    RejectedValue,
    TransientError,
    acknowledgeable,
)
from .person_plan import CreateProfile, DeleteProfile, Operation, PatchAttributes, PatchTags, SetConsent


@dataclass
class Sent:
    """What became of a person's operations: the ones APSIS took, the error that stopped the others (None: all
    went out), and the ones that may or may not have reached APSIS (a call that timed out or got a 5xx: it may
    have been applied), which the state must mark unknown rather than forget."""

    ops: list[Operation] = field(default_factory=list)
    error: ApiError | None = None
    unsure: list[Operation] = field(default_factory=list)


def send_operations(apsis: Any, ops: list[Operation], *, combine: bool = True) -> Sent:
    """Send `ops` in order, stopping at the first error, with one exception: after APSIS refused this person's
    value (an attribute it will never take), the withdrawals still go out (opt-outs, tags taken away), because
    the refusal repeats at every sync and would hold a CRM opt-out back for good."""
    result = Sent()
    index = 0
    while index < len(ops):
        op = ops[index]
        following = ops[index + 1] if index + 1 < len(ops) else None
        pair = (
            combine
            and isinstance(op, CreateProfile)
            and isinstance(following, PatchAttributes)
            and following.key == op.key
        )
        taken = [op, following] if pair and following is not None else [op]
        try:
            if pair:
                assert isinstance(following, PatchAttributes)
                apsis.create_with_attributes(op.key, following.attributes)
            else:
                send_one(apsis, op, combine=combine)
        except Exception as exc:
            result.error = _as_api_error(exc)
            if isinstance(result.error, Conflict) and isinstance(taken[-1], PatchAttributes):
                result.error = _value_conflict(result.error)
            if _maybe_applied(result.error):
                result.unsure = taken  # a timeout or a 5xx: APSIS may have applied it
            elif isinstance(result.error, RejectedValue):
                if result.error.maybe_applied:
                    # a consent answered 202/207 but not read back, or a PATCH answered 207 (PartlyApplied): APSIS
                    # may hold it (in part), so it is stored unknown, never as sent: the next sync sends it again
                    # (left as it was, a later CRM opt-out planned nothing over the opt-in APSIS then applied)
                    result.unsure = taken
                if not any(isinstance(o, CreateProfile) for o in taken):
                    _withdraw(apsis, ops[index + len(taken) :], result)
            return result
        result.ops.extend(taken)
        index += len(taken)
    return result


def _value_conflict(error: Conflict) -> RejectedValue:
    """A 409 to an attribute PATCH: a value APSIS will not take on this profile (a new e-mail address that is
    another profile's key, contracts/apsis-one.md section 3). This person's data, as a 400 on a value is: the
    withdrawals still go out and the failure is recorded on the person. Read as a Conflict, it was retried into
    the DLQ on every sync, and a CRM opt-out planned after it never reached APSIS."""
    refused = RejectedValue(
        f"APSIS One refused the attribute values: they conflict with another profile ({error})"[:300],
        status=error.status,
        detail=error.detail,
    )
    refused.__cause__ = error
    return refused


def _withdraw(apsis: Any, rest: list[Operation], result: Sent) -> None:
    """The withdrawals among `rest` (the profile exists: only a create's refusal leaves none to withdraw from).
    A later error of another kind (an outage) replaces the refusal: the change is then retried, not settled."""
    for op in rest:
        if isinstance(op, SetConsent) and op.type == "opt-out":
            withdrawal: Operation = op
        elif isinstance(op, PatchTags) and any(not on for on in op.tags.values()):
            withdrawal = PatchTags(op.key, {tag: on for tag, on in op.tags.items() if not on})
        else:
            continue
        try:
            send_one(apsis, withdrawal)
        except Exception as exc:
            later = _as_api_error(exc)
            if not acknowledgeable(later):
                result.error = later
                if _maybe_applied(later):
                    result.unsure = [*result.unsure, withdrawal]
                return
            if isinstance(later, PartlyApplied):  # an untag answered 207: unknown, sent again by the next sync
                result.unsure = [*result.unsure, withdrawal]
            continue
        result.ops.append(withdrawal)


def _maybe_applied(error: ApiError) -> bool:
    """Whether APSIS may have applied a call that failed: a timeout or a 5xx may have; a 429 or our own
    deadline refused only the last attempt, so they may have too when an earlier attempt went unanswered
    (a read timeout retried into a 429 left an opt-in in APSIS that no state knew of). A failure that is not
    retried may say so itself (a 403 named inside a 2xx: apsis_answers.py); a value APSIS refused is the
    caller's own case (RejectedValue: the withdrawals still go out)."""
    if isinstance(error, RejectedValue):
        return False
    if error.maybe_applied:
        return True
    return error.retryable and not isinstance(error, RateLimited | OutOfTime)


def _as_api_error(exc: Exception) -> ApiError:
    """An ApiError as is; anything else (the shared budget's DynamoDB call throttled, a bug) as a TransientError,
    so that what went out before it is still stored and the change is retried, never silently dropped."""
    if isinstance(exc, ApiError):
        return exc
    error = TransientError(f"{type(exc).__name__} while sending to APSIS One: {exc}"[:300])
    error.__cause__ = exc
    return error


def send_one(apsis: Any, op: Operation, *, combine: bool = True) -> None:
    """One operation, one call (two when a profile we created was deleted in APSIS behind our back)."""
    if isinstance(op, CreateProfile):
        apsis.create_profile(op.key)
    elif isinstance(op, PatchAttributes):
        # a profile deleted in APSIS behind our back answers NotFound: PersonSyncer plans it again as new
        apsis.patch_attributes(op.key, op.attributes)
    elif isinstance(op, SetConsent):
        apsis.set_consent(op.key, op.topic, op.channel, op.type)
    elif isinstance(op, PatchTags):
        apsis.patch_tags(op.key, op.tags)
    elif isinstance(op, DeleteProfile):
        if not apsis.delete_profile(op.key):  # "already gone": only where the keyspace still is
            confirm_scope(apsis)
    else:  # pragma: no cover - a new operation type must be wired here
        raise TypeError(f"unknown operation {op!r}")
