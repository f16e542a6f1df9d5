"""What was last pushed to APSIS One for one person, kept in DynamoDB so unchanged persons cost no API call.

Attribute values are stored as short hashes, never in clear: the state table must not become a second copy of
the CRM's personal data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from efficy_sync.consent import ConsentType, OptOutRecord

Outcome = Literal["synced", "skipped", "failed", "deleted"]
#: a consent whose value in APSIS One we cannot know (two syncs raced); it differs from every decision
UNKNOWN: Literal["unknown"] = "unknown"
#: an attribute hash no value has: the next sync sends the attribute's value again, or clears it (an attribute
#: with no hash at all is cleared by nobody: a clear needs the evidence that we set something)
UNSURE_HASH = "drift"
#: the same after a value we knew, whose hash follows the prefix: the last value we know APSIS held. An e-mail
#: address that may have changed is checked against other profiles, an unchanged one is not
#: (state_updates.email_needs_check), and an unsure first address is not either
UNSURE_CHANGE = "drift-change:"


def unsure_hash(previous: str | None) -> str:
    """The hash of an attribute APSIS One may or may not hold now, given the hash the state had for it."""
    if previous is None or previous == UNSURE_HASH or previous.startswith(UNSURE_CHANGE):
        return previous or UNSURE_HASH
    return UNSURE_CHANGE + previous


def known_hash(stored: str | None) -> str | None:
    """The hash of the last value we know APSIS One held (None: none, or a first value we are unsure of)."""
    if stored is None or stored == UNSURE_HASH:
        return None
    return stored.removeprefix(UNSURE_CHANGE)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


#: json.dumps with these options builds an encoder per call; one serves every hash (the same text, so the
#: same hashes as every stored state)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def value_hash(value: Any) -> str:
    """sha256 of the canonical JSON of `value`, 16 hex characters: enough to detect a change, useless to read."""
    # surrogatepass: a lone surrogate the sources did not mend (values.without_surrogates) must not fail a page
    return hashlib.sha256(_CANONICAL.encode(value).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def consent_key(topic: str, channel: str) -> str:
    return f"{topic}|{channel}"


def _slot_match(slot: str) -> str:
    topic, _, channel = slot.rpartition("|")
    return f"{topic.strip().casefold()}|{channel.strip()}"


def find_optout(optouts: dict[str, OptOutRecord], topic: str, channel: str) -> tuple[str, OptOutRecord] | None:
    """(stored slot key, record) of the APSIS opt-out of a subscription on a channel, the topic matched without
    case or surrounding spaces, as the opt-out route matches it: a record keeps the spelling of the webhook (a
    topic not mapped then) or of the mapping when it came, and a mapping added or re-spelled since must still
    meet it. Whether APSIS One tells topics apart by case is not documented: an opt-out is never lost over it.
    Of several spellings, one not yet confirmed (the one that blocks an opt-in longest), then the exact key, then
    the newest: an exact key confirmed long ago must not hide a newer opt-out recorded under the webhook's
    spelling while the topic was not mapped (a membership newer than the old confirmation opted them in)."""
    key = consent_key(topic, channel)
    exact = optouts.get(key)
    if exact is not None and not exact.confirmed:
        return key, exact
    wanted = _slot_match(key)
    found = sorted(((k, r) for k, r in optouts.items() if _slot_match(k) == wanted), key=lambda f: f[1].at)
    found.reverse()  # the newest first, then (a stable sort) the open ones, the exact key first among equals
    found.sort(key=lambda f: (f[1].confirmed, f[0] != key))
    return found[0] if found else None


class EmailConflict(BaseModel):
    """The person's new e-mail address already belongs to other APSIS One profiles: held back, never merged.

    Only a masked address and a hash are kept (the state table is not a copy of the CRM's personal data)."""

    model_config = ConfigDict(extra="ignore")

    address: str  # masked, for explain
    address_hash: str  # value_hash of the address, to recognise it again
    other_profiles: list[str]  # profile keys that hold the address in APSIS One
    change_stamp: str = ""
    detected_at: str = Field(default_factory=utc_now)


class PersonState(BaseModel):
    """Last state pushed for (integration, person), plus the outcome of the last attempt."""

    model_config = ConfigDict(extra="ignore")

    integration_id: str
    person_key: str
    change_stamp: str = ""
    #: when we asked Efficy for the snapshot this state was made from, and when its answer arrived (our clock,
    #: normalised; "": unknown): consent.read_order_bound says why they order snapshots better than D_CHANGE
    asked_at: str = ""
    answered_at: str = ""
    attribute_hashes: dict[str, str] = Field(default_factory=dict)
    # "topic|channel" -> last type sent; UNKNOWN when a concurrent sync may have overwritten it (or a call that
    # never reported back may have reached APSIS): an opt-in there reads APSIS's consents first (existing_optouts)
    consents: dict[str, ConsentType | Literal["unknown"]] = Field(default_factory=dict)
    tags: dict[str, bool] = Field(default_factory=dict)
    #: tags whose last call may or may not have reached APSIS (a 5xx, a timeout, an import that never reported
    #: back): the next sync sends its decision for them again, set or not. `tags` keeps True for one we tried to
    #: set, so a version without this field still takes it away when the rules no longer want it
    tags_unknown: list[str] = Field(default_factory=list)
    opted_in_at: dict[str, str] = Field(default_factory=dict)  # "topic|channel" -> when we last sent an opt-in
    exists_in_apsis: bool = False
    optouts: dict[str, OptOutRecord] = Field(default_factory=dict)  # "topic|channel" -> APSIS opt-out
    email_conflict: EmailConflict | None = None  # an e-mail change held back (see sync.PersonSyncer)
    revision: int = 0  # the stored item's revision this state was read at (set by the store; 0: none stored)
    last_outcome: Outcome | None = None
    error_category: str | None = None
    error_detail: str | None = None
    skip_reason: str | None = None
    updated_at: str = Field(default_factory=utc_now)
    #: the change (efficy_sync.correlation) whose handling wrote this outcome; set by the store on each write
    correlation_id: str | None = None


def health_issue(state: PersonState) -> tuple[Literal["failure", "skipped"], str] | None:
    """(kind, category) of what is wrong with (or deliberately left out of) a stored state; None when in step.

    The one rule both the health report and the store's sparse health index follow, so the index holds exactly
    the states the report lists: a failed attempt (or an error held on a synced state, e.g. an e-mail conflict)
    is a "failure" of its error category; a skipped person is "skipped" (no usable key, or sync conditions)."""
    if state.last_outcome == "failed" or (state.error_category and state.last_outcome != "skipped"):
        return "failure", state.error_category or "api_error"
    if state.last_outcome == "skipped":
        return "skipped", "no_key" if "K_CONTACT" in (state.skip_reason or "") else "conditions"
    return None
