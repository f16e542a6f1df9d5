"""From an Efficy person to what APSIS One should hold for them, or to the reason they are not synced.

A person is a dict of upper-case Efficy fields plus "profiles" (the CRM profile ids they belong to) and
"D_CHANGE", and, from our Efficy client, when it was asked for and answered (consent.ASKED_AT, ANSWERED_AT).
The result says what the CRM wants; `person_plan.plan_operations` weighs it against what was last pushed
(and against opt-outs made in APSIS) to find the calls to make.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from efficy_sync.conditions import evaluate
from efficy_sync.config import (
    CRMID_ATTRIBUTE,
    EMAIL_ATTRIBUTE,
    EMAIL_FIELD,
    KEY_FIELD,
    MOBILE_ATTRIBUTE,
    IntegrationConfig,
    ProfileRowStatus,
    SyncCondition,
)
from efficy_sync.consent import ANSWERED_AT, ASKED_AT, ConsentType
from efficy_sync.profile_rows import NOT_LOADED, PROFILES_UNREAD, Unreadable, memberships
from efficy_sync.values import Skipped, as_text, convert, whole_number

ConsentSlot = tuple[str, str]  # (topic, channel)


@dataclass(frozen=True)
class Desired:
    """What the CRM says APSIS One should hold for one person."""

    profile_key: str
    attributes: dict[str, Any]  # attribute -> value; None clears it
    consents: dict[ConsentSlot, ConsentType]  # CRM view: member -> opt-in, not a member -> opt-out
    tags: dict[str, bool]
    email: str | None
    mobile: str | None
    change_stamp: str
    skipped_fields: list[tuple[str, str]] = field(default_factory=list)  # (field, reason), counted by callers
    integration_id: str = ""
    memberships: dict[ConsentSlot, bool] = field(default_factory=dict)  # every consent mapping, applicable or not
    crm_profiles: dict[ConsentSlot, int] = field(default_factory=dict)  # the CRM profile each slot maps
    skipped_attributes: frozenset[str] = frozenset()  # not convertible: left as they are in APSIS One
    asked_at: str = ""  # when we asked Efficy for this snapshot ("": unknown; consent.read_order_bound)
    answered_at: str = ""  # when its answer arrived


@dataclass(frozen=True)
class Skip:
    """The person is not synced; `condition` is the first sync condition that failed (None: no usable key)."""

    reason: str
    condition: SyncCondition | None = None
    integration_id: str = ""
    profile_key: str | None = None
    change_stamp: str = ""
    asked_at: str = ""
    answered_at: str = ""
    #: failed only on a yes/no value no spelling of yes or no: never created, and not withdrawn either
    unreadable: bool = False
    #: consent slots whose CRM profile the person is not in (their profiles read): a CRM opt-out, which reaches
    #: a profile APSIS One already holds whatever the conditions say (person_plan.plan_for_skip)
    left: tuple[ConsentSlot, ...] = ()


MappingResult = Desired | Skip


def profile_key_of(value: Any) -> str | None:
    """K_CONTACT as the APSIS profile key: '123' whether Efficy sent 123, 123.0 or "123"."""
    number = whole_number(value)
    if number is None or number <= 0:
        return None
    return str(number)


def profile_ids(value: Any, status: ProfileRowStatus | None = None) -> set[int] | None:
    """The person's CRM profile ids; None when membership is unknown: fetched without them, an entry that is
    not a profile id, or a row that does not say in or out (efficy_sync.profile_rows). Unknown, not "member of
    fewer": an empty set opts the person out of every mapped subscription, so a misread entry must never just
    drop out of the set."""
    try:
        return memberships(value, status)
    except Unreadable:
        return None


def _map_value(
    person: Mapping[str, Any], efficy: str, value_type: str, attribute: str, result: _Collected
) -> Any | None:
    if efficy not in person:
        result.skip(efficy, attribute, "not present in the Efficy data")
        return None
    value = convert(person[efficy], value_type)
    if isinstance(value, Skipped):
        result.skip(efficy, attribute, value.reason)
        return None
    result.attributes[attribute] = value
    return value


@dataclass
class _Collected:
    attributes: dict[str, Any] = field(default_factory=dict)
    skipped_fields: list[tuple[str, str]] = field(default_factory=list)
    skipped_attributes: set[str] = field(default_factory=set)

    def skip(self, efficy: str, attribute: str | None, reason: str) -> None:
        self.skipped_fields.append((efficy, reason))
        if attribute:
            self.skipped_attributes.add(attribute)


def map_person(
    cfg: IntegrationConfig, person: Mapping[str, Any], *, query_tags: set[str] | None = None
) -> MappingResult:
    """`query_tags`: the configured query tags whose queries return this person (computed by the caller);
    None means unknown, and query tags are then left out rather than guessed."""
    stamp = as_text(person.get("D_CHANGE"))
    read = {"asked_at": str(person.get(ASKED_AT) or ""), "answered_at": str(person.get(ANSWERED_AT) or "")}
    key = profile_key_of(person.get(KEY_FIELD))
    if key is None:
        return Skip(
            f"the person has no valid {KEY_FIELD}",
            None,
            cfg.integration_id,
            None,
            stamp,
            asked_at=read["asked_at"],
            answered_at=read["answered_at"],
        )
    report = evaluate(cfg.sync_conditions, person)
    failure = report.first_failure
    if failure is not None:
        member_of = profile_ids(person.get("profiles"))
        return Skip(
            failure.reason,
            failure.condition,
            cfg.integration_id,
            key,
            stamp,
            asked_at=read["asked_at"],
            answered_at=read["answered_at"],
            unreadable=report.unreadable,
            left=()
            if member_of is None
            else tuple((c.subscription, c.channel) for c in cfg.consent_mappings if c.crm_profile not in member_of),
        )

    collected = _Collected()
    email = _map_value(person, EMAIL_FIELD, "email", EMAIL_ATTRIBUTE, collected)
    collected.attributes[CRMID_ATTRIBUTE] = key
    mobile = None
    for m in cfg.field_mappings:
        value = _map_value(person, m.efficy, m.type, m.apsis, collected)
        if m.apsis == MOBILE_ATTRIBUTE:
            mobile = value

    profiles = profile_ids(person.get("profiles"))
    consents: dict[ConsentSlot, ConsentType] = {}
    memberships: dict[ConsentSlot, bool] = {}
    tags: dict[str, bool] = {}
    if profiles is None:
        if cfg.consent_mappings or cfg.tags.profiles:
            collected.skip("profiles", None, str(person.get(PROFILES_UNREAD) or NOT_LOADED))
    else:
        for c in cfg.consent_mappings:
            slot = (c.subscription, c.channel)
            memberships[slot] = c.crm_profile in profiles
            address = email if c.channel == "email" else mobile
            if address is None and memberships[slot]:
                # an opt-in needs an address to reach; a withdrawal is never held back for lack of one
                missing = "missing e-mail" if c.channel == "email" else "missing mobile number"
                collected.skip(f"consent {c.subscription} ({c.channel})", None, missing)
                continue
            consents[slot] = "opt-in" if memberships[slot] else "opt-out"
        for t in cfg.tags.profiles:
            tags[t.tag] = t.crm_profile in profiles
    if query_tags is not None:
        for q in cfg.tags.queries:
            if q.tag in query_tags:
                tags[q.tag] = True

    return Desired(
        profile_key=key,
        attributes=collected.attributes,
        consents=consents,
        tags=tags,
        email=email,
        mobile=mobile,
        change_stamp=stamp,
        **read,
        skipped_fields=collected.skipped_fields,
        integration_id=cfg.integration_id,
        memberships=memberships,
        crm_profiles={(c.subscription, c.channel): c.crm_profile for c in cfg.consent_mappings},
        skipped_attributes=frozenset(collected.skipped_attributes),
    )


def needed_fields(cfg: IntegrationConfig) -> list[str]:
    """Ask Efficy only for what conditions and mappings read (plus the key, e-mail and change stamp)."""
    fields = {"K_CONTACT", "EMAIL1", "D_CHANGE"}
    fields.update(c.field for c in cfg.sync_conditions)
    fields.update(m.efficy for m in cfg.field_mappings)
    return sorted(fields)
