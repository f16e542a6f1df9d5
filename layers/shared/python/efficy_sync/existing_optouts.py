"""Opt-outs APSIS One already holds where we never sent anything: read before the first opt-in of a slot.

An opt-out reaches us through the opt-out route (optout.py), which records it. One made before this
integration existed (a migration from another connector), or by a route that never called ours, is not known:
the first opt-in we send for that subscription would overwrite it. So before the first opt-in of a slot (no
consent ever sent to it, no opt-out recorded), the person's APSIS consents are read once (one GET), and an
opt-out found there is recorded like one from the route (no write-back: the CRM shows them as a member, and
consent.decide keeps the opt-out until the CRM shows them out of the profile and back in).

`apsis.existing_optouts` says when: `known_profiles` (default) reads only for profiles our state says exist (a
consent mapping added later, a person joining a CRM profile for the first time); `always` also for persons
new to us (a first load into an account that already holds profiles, at one read per new member); `never`
trusts that the account held none. An integration whose full sync imports (`full_sync.write_mode: import`,
the mode for loading into an account that already holds profiles) reads under `known_profiles` for new
persons too: its files never resubscribe an opt-out, but every person who leaves the file path (a row the
report names or cannot clear, a refused file, the seams, real-time changes) is synced one by one, and would
otherwise be opted in over an opt-out the account held before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .clients.consent_entries import consent_entry
from .config import IntegrationConfig
from .consent import OptOutRecord
from .person_plan import Operation, SetConsent
from .state import UNKNOWN, PersonState, consent_key, find_optout

SOURCE = "apsis-existing"
#: the time such a record carries: older than any opt-out the route can report, so a route's record of the same
#: opt-out (arriving later, with its real time) replaces it and is written back to Efficy as usual, and any
#: snapshot showing the person out of the CRM profile confirms it (consent.confirm): then a newer re-add opts in
EXISTING_AT = "1970-01-01T00:00:00.000Z"


def first_opt_ins(ops: list[Operation], state: PersonState | None) -> list[SetConsent]:
    """The planned opt-ins of slots we never sent a consent to, or whose consent is UNKNOWN, and hold no opt-out
    record for. UNKNOWN: a call that never reported back (an import's file, a timeout) or a race may have left
    APSIS holding anything, an opt-out made before the integration included (kept by a file, which never
    resubscribes): read, it is kept. Should that opt-out be one we sent (a race), the person stays opted out
    until the CRM shows them out of the profile and back in: the safe side of not knowing."""
    sent = state.consents if state is not None else {}
    recorded = state.optouts if state is not None else {}
    return [
        op
        for op in ops
        if isinstance(op, SetConsent)
        and op.type == "opt-in"
        and sent.get(consent_key(op.topic, op.channel)) in (None, UNKNOWN)
        and find_optout(recorded, op.topic, op.channel) is None
    ]


def worth_reading(cfg: IntegrationConfig, state: PersonState | None, *, preview: bool = False) -> bool:
    """Whether to read the person's APSIS consents before a first opt-in. Under `known_profiles`: a profile we
    know exists, and in import mode every person (one who leaves the file path is synced one by one, where an
    opt-in would resubscribe). `preview` (a dry run): not for a person we do not know in import mode; the real
    run imports them without a read (an import never resubscribes), and one read per new person would make the
    preview of a first load far slower than the load (the preview may then count an opt-in the import leaves
    unapplied)."""
    mode = cfg.apsis.existing_optouts
    if mode != "known_profiles":
        return mode == "always"
    known = state is not None and state.exists_in_apsis
    return known or (cfg.full_sync.write_mode == "import" and not preview)


def held_optouts(apsis: Any, key: str, slots: list[SetConsent], now: Callable[[], str]) -> dict[str, OptOutRecord]:
    """slot key -> a record of the opt-out APSIS holds there (at EXISTING_AT; `recorded_at` says when we saw it)."""
    items = apsis.consents_if_profile(key, consent_types=["opt-out"])
    if items is None:
        return {}  # no such profile yet: it holds nothing
    # the topic matched without case, as the opt-out route matches it (state.find_optout says why)
    wanted = {(op.topic.casefold(), op.channel): consent_key(op.topic, op.channel) for op in slots}
    found: dict[str, OptOutRecord] = {}
    for item in items:
        # each entry read as an export's (topic or topic_discriminator, a channel name or discriminator, the
        # type in any case): one we cannot read raises, never "no opt-out here"
        (where, kind) = consent_entry(item)
        if kind != "opt-out":
            continue
        slot = wanted.get((where[0].strip().casefold(), where[1]))
        if slot is not None:
            found[slot] = OptOutRecord(at=EXISTING_AT, source=SOURCE, recorded_at=now())
    return found
