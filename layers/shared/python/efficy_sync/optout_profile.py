"""Who an opt-out call names, in the two ways a real Webhook node may say it besides our flat fields.

- The event shape contracts/apsis-one.md §8 writes down: the profile as an object, `{"profile": {"crm_id",
  "email", "mobile"}}` (beside `event_id` and `section_discriminator`, not read). Refused as naming nobody, the
  call lost its opt-out: the node does not resend a refused call. Read as the flat fields; a flat field given
  too must agree with it (two different persons named in one call are no evidence for either).
- A profile key of another keyspace than the integration's (`keyspace_discriminator` says which): it is no
  K_CONTACT. A phone number of the mobile keyspace is all digits, and read as a K_CONTACT it took another
  Efficy person out of a CRM profile. It is set aside (the e-mail address finds the person); in the e-mail
  keyspace the key is the address itself (contracts/apsis-one.md §2), so it stands for a missing `email`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the built-in keyspace whose profile key is the e-mail address (contracts/apsis-one.md §2)
EMAIL_KEYSPACE = "com.apsis1.keyspaces.email"
#: the built-in keyspace whose key is the crm-id attribute (`profile.crm_id`): ours is our K_CONTACT only there
CRM_ID_KEYSPACE = "com.apsis1.keyspaces.crm-id"
#: a nested profile's fields -> the flat field each stands for
NESTED = {"crm_id": "profile_key", "profile_key": "profile_key", "email": "email", "mobile": "mobile"}


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _same(a: Any, b: Any) -> bool:
    return str(a).strip().casefold() == str(b).strip().casefold()


def flatten(data: Mapping[str, Any], skip: tuple[str, ...] = ()) -> tuple[dict[str, Any], str | None]:
    """The call's fields with a nested `profile` object read as the flat ones (but its fields named in `skip`),
    and the first field given twice with different values (None: they agree)."""
    flat = dict(data)
    profile = data.get("profile")
    if not isinstance(profile, Mapping):
        return flat, None
    for name, target in NESTED.items():
        if name in skip:
            continue
        value = profile.get(name)
        if not _given(value):
            continue
        if _given(flat.get(target)) and not _same(flat[target], value):
            return flat, target
        flat[target] = flat.get(target) if _given(flat.get(target)) else value
    return flat, None


def foreign_key(data: dict[str, Any], ours: str | None) -> bool:
    """When the call names a keyspace other than `ours` (the integration's), take its profile key out of `data`
    (an e-mail keyspace's key becomes the `email` when none is given) and say so: True."""
    named = data.get("keyspace_discriminator")
    if ours is None or not isinstance(named, str) or not named.strip() or _same(named, ours):
        return False
    key = data.pop("profile_key", None)
    if _same(named, EMAIL_KEYSPACE) and _given(key) and not _given(data.get("email")):
        data["email"] = key
    return _given(key)


def crm_id(data: Mapping[str, Any], ours: str | None = None) -> Any:
    """The nested profile's `crm_id`: the person's CRM id (the crm-id attribute), whatever keyspace the call names
    (so read after a key of another keyspace is set aside), or None. Only when the integration keys its profiles
    in the crm-id keyspace (`ours`; None: not known): elsewhere we never write the crm-id, and one APSIS holds is
    another system's id (another CRM's connector), read as a K_CONTACT it took another Efficy person out of a
    CRM profile, and beside our own key it refused the call (400: the opt-out lost)."""
    if ours is not None and not _same(ours, CRM_ID_KEYSPACE):
        return None
    profile = data.get("profile")
    value = profile.get("crm_id") if isinstance(profile, Mapping) else None
    return value if _given(value) else None


def add_crm_id(fields: dict[str, Any], value: Any) -> bool:
    """`fields` with the crm_id as its profile_key; False when it names another person than the key given."""
    if value is None:
        return True
    if _given(fields.get("profile_key")) and not _same(fields["profile_key"], value):
        return False
    fields["profile_key"] = fields.get("profile_key") if _given(fields.get("profile_key")) else value
    return True
