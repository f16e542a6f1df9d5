"""`config validate --online`: does Efficy's per-person read show CRM profiles under the configured detail?

`efficy.profile_detail` names the detail that real-time sync and the write-back read a person's CRM profiles
from ("Prof" is assumed: contracts/efficy.md section 5). A server that answers a detail it does not know with
an empty dataset would make every person a member of no profile, and real-time sync would then opt everyone
out of every mapped subscription (only the removal breaker in the way). The full sync reads the same
memberships from the connector's records export, so the two reads can be compared: persons the export lists
in a CRM profile must show one through the detail too. Every sampled member showing none is the evidence; one
person edited between the two reads is not (a sample of several, all must disagree). The same read shows whether
the rows carry a consent status that `efficy.profile_status` does not say how to read (efficy_sync.profile_rows).
"""

from __future__ import annotations

from typing import Any

#: persons of the first export page read through the detail (one JSON-RPC call)
SAMPLE = 5
#: the export page the sample comes from
PAGE = 100


def profile_detail_problems(efficy: Any, cfg: Any) -> tuple[list[Any], list[str]]:
    """(problems, notes) about `efficy.profile_detail`; nothing to say when no mapping reads CRM profiles."""
    from efficy_sync.clients.errors import ApiError, TransientError
    from efficy_sync.config import Problem
    from efficy_sync.profile_rows import PROFILES_UNREAD

    if not cfg.consent_mappings and not cfg.tags.profiles:
        return [], []
    detail = cfg.efficy.profile_detail
    not_checked = "efficy.profile_detail not checked"
    try:
        page = efficy.list_persons_page(0, PAGE, ["K_CONTACT"], include_profiles=True)
    except ApiError as exc:
        return [], [f"{not_checked}: Efficy's records export could not be read ({exc})"]
    members = [int(record["K_CONTACT"]) for record in page if record.get("profiles")][:SAMPLE]
    if not members:
        return [], [f"{not_checked}: none of the first {PAGE} persons is in a CRM profile"]
    try:
        read = efficy.get_persons(members, ["K_CONTACT"])
    except TransientError as exc:
        return [], [f"{not_checked}: Efficy did not answer the read of a person ({exc})"]
    except ApiError as exc:
        message = f"found {detail!r}; Efficy refused to read a person's CRM profiles through it ({exc})"
        return [Problem("efficy.profile_detail", message, found=repr(detail))], []
    unread = [read[key][PROFILES_UNREAD] for key in members if key in read and PROFILES_UNREAD in read[key]]
    if unread:  # rows with a status nobody said how to read: consents would stay as they are for everyone
        return [Problem("efficy.profile_status", unread[0], found=repr(cfg.efficy.profile_status.field))], []
    shown = [key for key in members if key in read and read[key].get("profiles")]
    if read and not shown:
        message = (
            f"found {detail!r}; through it, {len(read)} person(s) the records export lists in a CRM profile show "
            "none: every person would read as out of every mapped profile (opted out). Set the name of the "
            "contact's CRM-profile detail on this server"
        )
        return [Problem("efficy.profile_detail", message, found=repr(detail))], []
    return [], []
