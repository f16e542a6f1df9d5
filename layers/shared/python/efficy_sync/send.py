"""Sending a person's planned operations to APSIS One in as few calls as APSIS allows.

The plan (person_plan.py) stays one operation per APSIS concept (create, attributes, consents, tags), because the
stored state records each of them; here a create followed by the attribute PATCH of the same profile goes out
as one v1 attribute PATCH, which APSIS documents creates a missing profile (`ApsisClient.
create_with_attributes`). That call is atomic: either both operations reached APSIS or neither did, so what is
reported as sent stays true. `combine=False` (config `apsis.create_with_attribute_patch: false`) keeps the
older two calls.
"""

from __future__ import annotations

from typing import Any

from .clients.errors import ApiError, NotFound
from .person_plan import CreateProfile, DeleteProfile, Operation, PatchAttributes, PatchTags, SetConsent


def send_operations(
    apsis: Any, ops: list[Operation], *, combine: bool = True
) -> tuple[list[Operation], ApiError | None]:
    """Send `ops` in order. Returns the ones APSIS took and the error that stopped the rest."""
    sent: list[Operation] = []
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
        try:
            if pair:
                assert isinstance(following, PatchAttributes)
                apsis.create_with_attributes(op.key, following.attributes)
            else:
                send_one(apsis, op, combine=combine)
        except ApiError as exc:
            return sent, exc
        taken = [op, following] if pair else [op]
        sent.extend(o for o in taken if o is not None)
        index += len(taken)
    return sent, None


def send_one(apsis: Any, op: Operation, *, combine: bool = True) -> None:
    """One operation, one call (two when a profile we created was deleted in APSIS behind our back)."""
    if isinstance(op, CreateProfile):
        apsis.create_profile(op.key)
    elif isinstance(op, PatchAttributes):
        try:
            apsis.patch_attributes(op.key, op.attributes)
        except NotFound:  # deleted in APSIS behind our back: create it again
            if combine:
                apsis.create_with_attributes(op.key, op.attributes)
            else:
                apsis.create_profile(op.key)
                apsis.patch_attributes(op.key, op.attributes)
    elif isinstance(op, SetConsent):
        apsis.set_consent(op.key, op.topic, op.channel, op.type)
    elif isinstance(op, PatchTags):
        apsis.patch_tags(op.key, op.tags)
    elif isinstance(op, DeleteProfile):
        apsis.delete_profile(op.key)
    else:  # pragma: no cover - a new operation type must be wired here
        raise TypeError(f"unknown operation {op!r}")
