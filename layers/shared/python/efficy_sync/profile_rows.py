"""A person's CRM-profile rows read as memberships, or as unknown when a row does not say clearly.

Consent is legal data, and a membership read wrong costs it both ways: a row of a profile the person left,
read as a membership, opts them back in; an unreadable row dropped from the set opts them out. Efficy does
not publish whether its profile rows carry an opt-in/opt-out status (contracts/efficy.md §5: "not found"), so:
- with no status column configured, a row is a membership, unless it carries a column that looks like a
  status (STATUS_LIKE): then nobody has said how to read it, and the person's memberships are unknown
  (consents and profile tags left as they are, and the reason shown by explain and health);
- with `efficy.profile_status.field` set, that column says in or out, by the configured values; another
  value makes the memberships unknown, unless the config says that any other value means "left" (a date
  column such as D_OPTOUT, whose empty value is the only "in").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from efficy_sync.values import as_text, is_empty_value, whole_number

if TYPE_CHECKING:
    from efficy_sync.config import ProfileRowStatus

#: columns of a profile row that look like a consent status (upper case): present and not configured, the row's
#: meaning is unknown. Names only: the row's values are never logged.
STATUS_LIKE = frozenset(
    {
        "STATUS",
        "CONSENT",
        "CONSENT_STATUS",
        "CONSENTSTATUS",
        "OPTIN",
        "OPT_IN",
        "OPTOUT",
        "OPT_OUT",
        "SUBSCRIBED",
        "UNSUBSCRIBED",
        "D_OPTOUT",
        "D_OPT_OUT",
        "D_UNSUBSCRIBED",
    }
)
NOT_LOADED = "CRM profiles not loaded: consents and profile tags left as they are"
#: the person's key where the Efficy client says why its profile rows could not be read (lower case, as
#: "profiles": Efficy's columns are upper case, so none can collide)
PROFILES_UNREAD = "profiles_unread"


class Unreadable(Exception):
    """The rows do not say which profiles the person is in; `reason` names columns, never values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(value: Any) -> int | None:
    number = whole_number(value)
    return number if number is not None and number > 0 else None


def _column(row: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(present, value) of a column, whatever the case of its name."""
    for column, value in row.items():
        if str(column).upper() == name:
            return True, value
    return False, None


def _in_profile(row: Mapping[str, Any], status: ProfileRowStatus | None) -> bool:
    """Whether one profile row says the person is in the profile; Unreadable when it does not say clearly."""
    if status is None or status.field is None:
        columns = sorted({str(column).upper() for column in row} & STATUS_LIKE)
        if columns:
            raise Unreadable(
                f"CRM profile rows carry {', '.join(columns)}, which efficy.profile_status does not say how to "
                "read (a row of a profile the person left would read as a membership): consents and profile "
                "tags left as they are"
            )
        return True
    field = status.field
    present, value = _column(row, field)
    if not present:
        raise Unreadable(f"CRM profile rows without {field} (efficy.profile_status.field): consents left as they are")
    text = "" if is_empty_value(value) else as_text(value).strip().casefold()  # "": empty, zero date included
    if text in status.member_values:
        return True
    if text in status.not_member_values or status.other_values == "not_member":
        return False
    raise Unreadable(
        f"a CRM profile row's {field} holds a value efficy.profile_status does not list as in or out: "
        "consents and profile tags left as they are"
    )


def report_unread(persons: Iterable[Mapping[str, Any]]) -> None:
    """Count the persons whose profile rows could not be read (`CrmProfilesUnread`) and log the first reason
    (it names columns, never a value or a person): their consents stay as they are, which a full sync's report
    and the real-time outcomes would not show, so a status column nobody configured must show somewhere."""
    reasons = [str(person[PROFILES_UNREAD]) for person in persons if PROFILES_UNREAD in person]
    if reasons:
        from efficy_sync.observability import count, logger

        count("CrmProfilesUnread", len(reasons))
        logger.warning(
            "CRM profiles not read: consents left as they are", extra={"persons": len(reasons), "reason": reasons[0]}
        )


def memberships(value: Any, status: ProfileRowStatus | None = None) -> set[int]:
    """The CRM profile ids a person is in, from profile rows ({K_PROFILE, ...}) or bare ids. Raises Unreadable
    for None (not loaded), an entry that is no profile id, or a row that does not say in or out."""
    if value is None:
        raise Unreadable(NOT_LOADED)
    said: dict[int, bool] = {}
    items: Iterable[Any] = value if isinstance(value, list | tuple | set | frozenset) else [value]
    for item in items:
        key = _key(_column(item, "K_PROFILE")[1] if isinstance(item, Mapping) else item)
        if key is None:
            raise Unreadable(NOT_LOADED)
        member = _in_profile(item, status) if isinstance(item, Mapping) else True
        if said.setdefault(key, member) != member:
            # rows kept as history (joined, left, joined again) with nothing that says which is the latest
            raise Unreadable(
                "CRM profile rows say both in and out of one profile: consents and profile tags left as they are"
            )
    return {key for key, member in said.items() if member}
