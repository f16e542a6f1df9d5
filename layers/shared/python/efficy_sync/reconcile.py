"""Drift between Efficy and APSIS One: what APSIS holds, weighed against what the sync rules decide.

Plain Python, no AWS and no HTTP: `compare_person` takes one Efficy person (None when Efficy proved them
gone), our stored state and the profile APSIS One exported, and returns the drift per category:

- `missing`: in Efficy and matching the sync conditions, but no profile in APSIS One;
- `orphaned`: a profile with our crm-id key whose person Efficy deleted or who no longer matches, where the
  integration's `on_delete` / `on_condition_lost` says it should be deleted or untagged (with `ignore` /
  `leave` such a profile is where the rules want it: a note, not drift);
- `attributes`: an attribute value that differs from the mapping's result (names only, never values); a value
  APSIS holds where the CRM field is empty is drift only where we sent one there (the sync clears only those),
  else a note (`kept_values`);
- `consents`: a consent that differs from what consent.decide says, with the opt-out stickiness applied. An
  opt-out APSIS One holds, or one we recorded, is never drift to "fix" into an opt-in: APSIS holding an
  opt-out where the CRM membership would opt in is a note (`kept_optouts`), not drift, unless our state
  shows the opt-out is one this integration sent (the person was out of the CRM profile, no opt-out was
  made in APSIS One): the CRM decides those, as every sync does, so they are drift. An opt-out the rules
  decide where APSIS holds nothing is no drift either (there is nothing to withdraw);
- `tags`: a managed tag (CRM-profile tags, and query tags when the queries were run) set differently.

`invalidate` turns a person's drift into the stored state the normal sync needs to repair it: the state
says what we last pushed, so a drift APSIS One has and the state does not know would otherwise plan no call.
It marks exactly the drifting parts as unknown (as sync.py does after a race), and the person's sync, run
by the worker from a fresh Efficy read, decides and sends with every consent rule in force.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, cast

from .clients.apsis_export import ExportedProfile
from .config import EMAIL_ATTRIBUTE, IntegrationConfig
from .consent import confirm, decide
from .mapping import Desired, Skip, map_person
from .state import UNKNOWN, UNSURE_HASH, PersonState, consent_key, find_optout, unsure_hash

if TYPE_CHECKING:
    from .consent import ConsentType

CATEGORIES = ("missing", "orphaned", "attributes", "consents", "tags")
NOTES = (
    "kept_optouts",
    "pending_opt_ins",
    "kept_by_policy",
    "email_conflicts",
    "kept_values",
    "unconfirmed_absence",
    "unreadable_conditions",
)
EXAMPLES_PER_CATEGORY = 10
DRIFT_MARK = UNSURE_HASH  # an attribute hash no value has: the next sync clears (or sends) the attribute


@dataclass(frozen=True)
class Drift:
    """One difference. `detail` names what differs (attribute, topic, tag) but never holds a personal value."""

    category: str
    person_key: str
    detail: dict[str, Any] = field(default_factory=dict, hash=False)
    fixable: bool = True


@dataclass
class PersonCheck:
    person_key: str
    drifts: list[Drift] = field(default_factory=list)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deleted: bool = False  # Efficy proved the person gone


def desired_tags(cfg: IntegrationConfig, desired: Desired, query_tags: set[str] | None) -> dict[str, bool]:
    """The tags the rules want. A query tag is decided only when the queries were run (`query_tags` not None),
    as the full sync's Tags step decides it: members tagged, everyone else untagged."""
    tags = {t: v for t, v in desired.tags.items() if t not in {q.tag for q in cfg.tags.queries}}
    if query_tags is not None:
        tags.update({q.tag: q.tag in query_tags for q in cfg.tags.queries})
    return tags


def compare_person(
    cfg: IntegrationConfig,
    key: int | str,
    person: dict[str, Any] | None,
    state: PersonState | None,
    profile: ExportedProfile | None,
    *,
    query_tags: set[str] | None = None,
) -> PersonCheck:
    """The drift of one person. `person` None: Efficy proved them gone (two reads); `profile` None: APSIS One
    has no profile with this key in the section's keyspace."""
    check = PersonCheck(str(key), deleted=person is None)
    if person is not None and any(c.field not in person for c in cfg.sync_conditions):
        # a record without a field the conditions read is a malformed answer, not a person who fails them: the
        # sync refuses to judge it (INCOMPLETE_ANSWER), so reconcile does not call it orphaned either
        check.notes.append(("unreadable_conditions", {}))
        return check
    result = None if person is None else map_person(cfg, person, query_tags=query_tags)
    if not isinstance(result, Desired):
        if isinstance(result, Skip) and result.unreadable:
            # a yes/no value the conditions cannot read is no evidence either way: the sync leaves the person
            # as is (person_plan.plan_for_skip), so reconcile judges nothing either
            check.notes.append(("unreadable_conditions", {}))
        elif profile is not None:
            _orphan(cfg, check, state, profile, query_tags is not None, result is None)
        return check
    if profile is None:
        check.drifts.append(Drift("missing", check.person_key, {}))
        return check
    _consents(check, result, state, profile)
    if not profile.complete:  # read one by one: only its consents are known
        return check
    _attributes(check, result, state, profile)
    for tag, wanted in sorted(desired_tags(cfg, result, query_tags).items()):
        if wanted != (tag in profile.tags):
            detail = {"tag": tag, "apsis": tag in profile.tags, "rules": wanted}
            query = tag in {q.tag for q in cfg.tags.queries}
            check.drifts.append(Drift("tags", check.person_key, {**detail, "query_tag": query} if query else detail))
    return check


def _orphan(
    cfg: IntegrationConfig,
    check: PersonCheck,
    state: PersonState | None,
    profile: ExportedProfile,
    with_queries: bool,
    deleted: bool,
) -> None:
    policy = cfg.on_delete if deleted else cfg.on_condition_lost
    why = "deleted in Efficy" if deleted else "no longer matches the sync conditions"
    # a profile we never created may be someone else's: reported, left to a human. A state alone is no proof: the
    # sync stores one for every person it skips (exists_in_apsis False), and --fix deleted such a profile (and
    # the opt-out it held) made by an import or an earlier connector
    ours = state is not None and state.exists_in_apsis
    if policy == "delete":
        detail: dict[str, Any] = {"reason": why, "should": "delete"}
    elif policy == "untag":
        known = profile.tags if profile.complete else {t for t, on in (state.tags if state else {}).items() if on}
        present = sorted(set(cfg.managed_tags(with_queries=with_queries)) & known)
        if not present:
            return
        detail = {"reason": why, "should": "untag", "tags": present}
    else:
        check.notes.append(("kept_by_policy", {"reason": why, "policy": policy}))
        return
    if not ours:
        detail["not_fixed"] = "not created by this integration (no sync state says it exists)"
    check.drifts.append(Drift("orphaned", check.person_key, detail, fixable=ours))


def _same(apsis: Any, mapped: Any) -> bool:
    """APSIS may give back a value in another form than we sent it (a number as text, 12.50 for 12.5, a date as
    a midnight UTC time, a time with its zone, a phone number without its "+"); compare values, never their
    forms. Compared as text only, such a value was drift for ever: re-sent at every --fix, alarmed every day.
    Leaning to "same" costs at most a missed re-send of an equal value, never a write."""
    if apsis == mapped:
        return True
    if apsis is None or mapped is None:
        return False
    if isinstance(apsis, bool) or isinstance(mapped, bool):
        return str(apsis).lower() == str(mapped).lower()
    held, sent = str(apsis).strip(), str(mapped).strip()
    if held == sent:
        return True
    # a number we mapped is a number whatever str() makes of it (1e-05); only text is held to the plain form
    if isinstance(mapped, int | float) and (number := _number(held)) is not None and _finite(mapped) == number:
        return True
    for parse in (_number, _moment, _phone):
        a, b = parse(held), parse(sent)
        if a is not None and a == b:
            return True
    return False


def _finite(value: int | float) -> Decimal | None:
    number = Decimal(str(value))
    return number if number.is_finite() else None


#: a number as APSIS may give one back: no leading zero or separator (a postcode "01000" is text whose every
#: character counts); an exponent only after a digit and a point or a leading non-zero digit ("1e-05", "2.5E+16")
_PLAIN_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-][0-9]+)?$")
#: an extended ISO date or time ("20240105" is an eight-digit code, not a date)
_ISO_MOMENT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?$")


def _number(text: str) -> Decimal | None:
    if not _PLAIN_NUMBER.match(text):
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _moment(text: str) -> datetime | None:
    """A date or an ISO time as a UTC moment (a date: its midnight; no zone: UTC, as we send times)."""
    if not _ISO_MOMENT.match(text):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _phone(text: str) -> str | None:
    """The digits of a phone number in international form, "+" or not (a phone attribute is sent E.164)."""
    digits = text.removeprefix("+")
    return digits if digits.isdigit() and len(digits) >= 6 else None


def _attributes(check: PersonCheck, desired: Desired, state: PersonState | None, profile: ExportedProfile) -> None:
    for name, value in sorted(desired.attributes.items()):
        if name in desired.skipped_attributes:
            continue
        if name == EMAIL_ATTRIBUTE and state is not None and state.email_conflict is not None:
            check.notes.append(("email_conflicts", {"attribute": name}))  # held back on purpose (sync.py)
            continue
        held = profile.attributes.get(name)
        if value is None:
            if held is not None and _we_wrote(state, name):
                check.drifts.append(Drift("attributes", check.person_key, {"attribute": name, "should": "clear"}))
            elif held is not None:
                # a value we never wrote (a form, an import, the person) where the CRM field is empty: the sync
                # clears only a value it sent once the CRM field is emptied (person_plan); --fix blanked it
                check.notes.append(("kept_values", {"attribute": name}))
        elif not _same(held, value):
            should = "set" if held is None else "update"
            check.drifts.append(Drift("attributes", check.person_key, {"attribute": name, "should": should}))


def _we_wrote(state: PersonState | None, name: str) -> bool:
    """Our state holds a value we sent to this attribute of a profile we created: an empty CRM field clears it."""
    return state is not None and state.exists_in_apsis and name in state.attribute_hashes


def _consents(check: PersonCheck, desired: Desired, state: PersonState | None, profile: ExportedProfile) -> None:
    for (topic, channel), crm_type in sorted(desired.consents.items()):
        member = crm_type == "opt-in"
        held = profile.consents.get((topic, channel))
        if held == "confirmed-opt-in":
            held = "opt-in"  # a double opt-in the person confirmed: what an opt-in asks for
        slot = consent_key(topic, channel)
        read = (desired.change_stamp, desired.asked_at, desired.answered_at)
        crm_profile = desired.crm_profiles.get((topic, channel))
        found = find_optout(state.optouts, topic, channel) if state else None
        record = confirm(found[1] if found else None, member, *read, crm_profile=crm_profile)
        pushed = cast("ConsentType | None", held if held in ("opt-in", "opt-out") else None)
        decision = decide(member, pushed, record, *read, crm_profile=crm_profile)
        where = {"topic": topic, "channel": channel}
        if decision.type == "opt-in" and held == "opt-out" and _our_opt_out(state, slot):
            # the opt-out is one this integration sent because the person was not in the CRM profile (no opt-out
            # was made in APSIS One): the CRM membership decides, and the next sync opts in, so it is drift
            detail = {**where, "apsis": "opt-out", "rules": "opt-in", "opt_out_by": "this integration"}
            check.drifts.append(Drift("consents", check.person_key, detail))
        elif decision.type == "opt-in" and held == "opt-out":
            check.notes.append(("kept_optouts", where))  # stickiness: never "repaired" into an opt-in
        elif decision.type == "opt-in" and held == "pending-opt-in":
            check.notes.append(("pending_opt_ins", where))  # the person's own confirmation is awaited: not overridden
        elif decision.type is None or (decision.type == "opt-out" and held is None):
            continue
        elif decision.type != held:
            detail = {**where, "apsis": held or "none", "rules": decision.type}
            check.drifts.append(Drift("consents", check.person_key, detail))


def _our_opt_out(state: PersonState | None, slot: str) -> bool:
    """True only on positive evidence that APSIS holds the opt-out because we sent it: our state says the last
    consent we pushed on the slot was that opt-out, and no opt-out made in APSIS One is recorded on it. Anything
    less (no state, unknown, an opt-out record) keeps the APSIS opt-out."""
    if state is None or state.consents.get(slot) != "opt-out":
        return False
    topic, _, channel = slot.rpartition("|")
    return find_optout(state.optouts, topic, channel) is None


# ---- repair -------------------------------------------------------------------------------------------------
def invalidate(integration_id: str, check: PersonCheck, state: PersonState | None) -> PersonState | None:
    """The state to store before the person's normal sync, so that sync sends what repairs each fixable drift;
    None when there is nothing to store. Opt-out records are never touched (they live in their own item).

    A repair that ends in an opt-in never rests on the export alone: where the export shows no consent (or no
    profile), the slot is left as never sent and the profile as existing, so the sync reads the person's APSIS
    consents before that first opt-in (existing_optouts.py) and keeps an opt-out APSIS holds. An export read
    in another shape than we expect (the consents under another key, the keys spelled otherwise) looked like
    "no consent" or "no profile", and the repair opted people in over opt-outs they had made in APSIS."""
    drifts = [d for d in check.drifts if d.fixable]
    if not drifts:
        return None
    new = (
        state.model_copy(deep=True)
        if state is not None
        else PersonState(integration_id=integration_id, person_key=check.person_key, exists_in_apsis=True)
    )
    for drift in drifts:
        detail = drift.detail
        if drift.category == "missing":
            # "may exist": a profile that is gone answers the attribute PATCH 404 and is created again whole
            # (sync.PersonSyncer._profile_gone), and the first opt-ins read APSIS's consents first; marked as not
            # existing, they were sent unread. What we sent is made unknown, never forgotten: wiped, an export
            # that left the profile out (or answered empty) erased our opt-ins, and a CRM withdrawal since was
            # never sent ("never opted in: nothing to withdraw"), nor a cleared field or a tag taken away
            new.exists_in_apsis = True
            new.attribute_hashes = {name: unsure_hash(h) for name, h in new.attribute_hashes.items()}
            new.consents = dict.fromkeys(new.consents, UNKNOWN)
            new.tags_unknown = sorted(set(new.tags_unknown) | set(new.tags))
        elif drift.category == "orphaned":
            new.exists_in_apsis = True
            new.tags.update(dict.fromkeys(detail.get("tags", []), True))
        elif drift.category == "attributes":
            if detail.get("should") == "clear":
                new.attribute_hashes[detail["attribute"]] = DRIFT_MARK
            else:
                new.attribute_hashes.pop(detail["attribute"], None)
        elif drift.category == "consents" and detail.get("apsis") == "none":
            new.consents.pop(consent_key(detail["topic"], detail["channel"]), None)  # a first opt-in: read first
            # the export showed the profile: read before that opt-in even where the state said it did not exist
            # (existing_optouts.worth_reading reads only for known profiles in diff mode)
            new.exists_in_apsis = True
        elif drift.category == "consents":
            new.consents[consent_key(detail["topic"], detail["channel"])] = UNKNOWN
        elif drift.category == "tags":
            new.tags[detail["tag"]] = not detail["rules"]
    return new


# ---- the report ---------------------------------------------------------------------------------------------
@dataclass
class DriftReport:
    """Counts of persons per category and a few examples (person keys, what differs; no personal values)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    notes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOTES, 0))
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {c: [] for c in CATEGORIES})
    persons_checked: int = 0
    persons_drifting: int = 0

    def add(self, check: PersonCheck) -> None:
        self.persons_checked += 1
        if check.drifts:
            self.persons_drifting += 1
        for category in sorted({d.category for d in check.drifts}):
            self.counts[category] += 1
            examples = self.examples[category]
            if len(examples) < EXAMPLES_PER_CATEGORY:
                found = [d for d in check.drifts if d.category == category]
                examples.append({"person_key": check.person_key, "details": [d.detail for d in found]})
        for note in {n for n, _ in check.notes}:
            self.notes[note] += 1

    def note(self, name: str, count: int = 1) -> None:
        self.notes[name] = self.notes.get(name, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "total_drift": self.total,
            "persons_checked": self.persons_checked,
            "persons_drifting": self.persons_drifting,
            "notes": dict(self.notes),
            "examples": {c: list(v) for c, v in self.examples.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        """A report saved in a resumable run's cursor."""
        report = cls()
        report.counts.update(data.get("counts") or {})
        report.notes.update(data.get("notes") or {})
        for category, examples in (data.get("examples") or {}).items():
            report.examples[category] = list(examples)
        report.persons_checked = int(data.get("persons_checked") or 0)
        report.persons_drifting = int(data.get("persons_drifting") or 0)
        return report


def drifting(checks: Iterable[PersonCheck]) -> list[PersonCheck]:
    return [c for c in checks if c.drifts]
