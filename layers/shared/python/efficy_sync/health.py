"""Sync health: which persons are not in step with Efficy, grouped by why, and how to bring them back.

Three sources, from cheap to dear:
- the stored states the health index holds (store/persons.py: a sparse index over failed and skipped persons,
  so the cost follows the failures, not the stored persons): the last attempt failed (`error_category`:
  rejected value, permission, ...), was held back (e-mail conflict), or the person does not meet the sync
  conditions; a full scan (`--scan`) also counts every stored person;
- the contact-changes DLQ: changes whose retries ran out (Efficy or APSIS unavailable or rate limiting for
  longer than the retries last); the messages name the person, the cause is in the logs;
- optionally the persons' current Efficy data, mapped again: synced persons whose e-mail or mobile number is
  missing or invalid, so a consent or an attribute is left out ("data" categories).

Reports name persons by their Efficy key only, never by e-mail or phone; error details are masked again.
A retry is a "Resync" change per person on the contact-changes queue: the worker refetches the person, so a
retry after the fix (in Efficy, in the config, in a secret) applies the current data.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .changes import ContactChange
from .mapping import Desired
from .observability import scrub_text
from .state import PersonState, health_issue, utc_now

Kind = Literal["failure", "data", "skipped"]
KINDS: tuple[Kind, ...] = ("failure", "data", "skipped")
KIND_TITLES = {
    "failure": "Failures (not in step with Efficy until fixed and retried)",
    "data": "Data problems (synced, but a value or a consent was left out)",
    "skipped": "Not synced by design",
}
#: `--retry` names: a category, or a whole kind
RETRY_ALL = "failures"


@dataclass(frozen=True)
class Category:
    name: str
    label: str
    kind: Kind
    advice: str


def _categories(*items: Category) -> dict[str, Category]:
    return {c.name: c for c in items}


CATEGORIES = _categories(
    # -- the last attempt failed (clients/errors.py categories, recorded by sync.PersonSyncer)
    Category(
        "rejected_value",
        "rejected value",
        "failure",
        "APSIS One (or Efficy) refused a value: a wrong type or format for the attribute. Correct the value in "
        "Efficy or the field mapping, then retry.",
    ),
    Category(
        "consent_refused",
        "consent refused",
        "failure",
        "APSIS One refused a subscription change for this profile (409: a transition it does not support, e.g. "
        "an opt-out while a double opt-in is pending). Nothing was recorded as sent, so the next sync tries "
        "again; check the profile's consent in APSIS One if it persists.",
    ),
    Category(
        "partly_applied",
        "applied in part",
        "failure",
        "APSIS One answered 207 (or listed errors): part of a write may not be applied. Nothing was recorded as "
        "sent, so the next sync sends it again; check the profile in APSIS One if it persists.",
    ),
    Category(
        "payload_too_large",
        "payload too large",
        "failure",
        "A request was over the API's size limit (very long text values). Shorten the values, then retry.",
    ),
    Category(
        "permission",
        "permission",
        "failure",
        "An API refused our credentials (401/403): the APSIS client or the Efficy API key lacks a right or was "
        "revoked. Fix the rights or rotate the secret (see docs/runbook.md), then retry.",
    ),
    Category(
        "rate_limit",
        "rate limit",
        "failure",
        "An API kept answering 429 after every retry. Wait, or lower the concurrency, then retry.",
    ),
    Category(
        "efficy_unavailable",
        "Efficy unavailable",
        "failure",
        "Efficy answered 5xx (often a 504 HTML page from its proxy) or timed out. Retry once Efficy is back.",
    ),
    Category(
        "apsis_unavailable",
        "APSIS One unavailable",
        "failure",
        "APSIS One answered 5xx or timed out. Retry once it is back.",
    ),
    Category("unavailable", "API unavailable", "failure", "An API did not answer. Retry once it is back."),
    Category(
        "not_found",
        "not found",
        "failure",
        "An API said a definition (attribute, topic, section) does not exist: check the config against APSIS "
        "One (`efficy-sync config validate FILE --online`), then retry.",
    ),
    Category("conflict", "conflict", "failure", "An API answered 409. See `efficy-sync explain ID PERSON_KEY`."),
    Category(
        "request_refused",
        "request refused",
        "failure",
        "An API refused our request itself (405, 406, 415...: not a value of the person's): a proxy or firewall "
        "in front of it, or a path setting that is wrong for this account (apsis.profile_tags_path). Nothing "
        "was acknowledged: fix the cause, then retry (`efficy-sync dlq redrive`).",
    ),
    Category(
        "efficy_error",
        "Efficy business error",
        "failure",
        "Efficy refused an operation (HTTP 200 with an error). See `efficy-sync explain ID PERSON_KEY`.",
    ),
    Category(
        "email_conflict",
        "e-mail used by another person",
        "failure",
        "The new e-mail address already belongs to another synced person's APSIS profile; the change was held "
        "back. Correct the address or merge the contacts in Efficy; the change that follows syncs it.",
    ),
    Category("api_error", "other API error", "failure", "See `efficy-sync explain ID PERSON_KEY`."),
    Category(
        "dead_lettered",
        "in the dead-letter queue",
        "failure",
        "The change's retries ran out (usually Efficy or APSIS One unavailable or rate limiting for a long time; "
        "the cause is in the apply_changes logs). Fix the cause, then retry: the retry also removes these "
        "persons' messages from the dead-letter queue.",
    ),
    # -- data problems: the person is synced, something is left out (found with --check-data)
    Category(
        "missing_email",
        "missing e-mail",
        "data",
        "Member of a CRM profile mapped to an e-mail subscription, but without an e-mail address: no opt-in "
        "was sent. Add the address in Efficy.",
    ),
    Category(
        "missing_mobile",
        "missing mobile number",
        "data",
        "Member of a CRM profile mapped to an SMS subscription, but without a mobile number: no opt-in was "
        "sent. Add the number in Efficy.",
    ),
    Category(
        "invalid_email",
        "invalid e-mail",
        "data",
        "The e-mail address is not valid, so it was not sent. Correct it in Efficy.",
    ),
    Category(
        "invalid_phone",
        "invalid phone",
        "data",
        "A phone number is not in international format (+ and 8 to 15 digits); the APSIS attribute was left as "
        "it was. Correct it in Efficy.",
    ),
    Category(
        "invalid_value",
        "invalid value",
        "data",
        "A mapped field could not be converted to its attribute type; the attribute was left as it was. "
        "Correct the value in Efficy, or the mapping's `type`.",
    ),
    Category(
        "field_missing",
        "mapped field not in Efficy's data",
        "data",
        "A mapped Efficy field is not returned by Efficy: check the field name in the config.",
    ),
    Category(
        "profiles_unread",
        "CRM-profile rows that do not say in or out",
        "data",
        "Efficy's CRM-profile rows carry a status (or say both in and out) that efficy.profile_status does not "
        "say how to read: the person's consents and profile tags were left as they are. Set efficy.profile_status "
        "(README, Configuration); `efficy-sync explain ID PERSON_KEY` names the column.",
    ),
    # -- by design
    Category(
        "conditions",
        "sync conditions not met",
        "skipped",
        "Not a failure: these persons fail a sync condition, so they are not in APSIS One.",
    ),
    Category(
        "no_key",
        "no valid K_CONTACT",
        "skipped",
        "Efficy returned the person without a usable key.",
    ),
)

#: reasons of mapping.Desired.skipped_fields (values.py, mapping.py) -> category; others are "invalid_value"
_DATA_REASONS = {
    "missing e-mail": "missing_email",
    "missing mobile number": "missing_mobile",
    "not a valid e-mail address": "invalid_email",
    "not present in the Efficy data": "field_missing",
}
_IGNORED_REASONS = ("CRM profiles not loaded",)


def category(name: str) -> Category:
    """A known category, or a generic failure for a category a newer error class introduced."""
    return CATEGORIES.get(name) or Category(
        name, name.replace("_", " "), "failure", "See `efficy-sync explain ID PERSON_KEY`."
    )


@dataclass(frozen=True)
class Finding:
    person_key: str
    category: str
    detail: str | None = None  # an error text or a condition; masked, and never a person's value


def state_findings(state: PersonState) -> list[Finding]:
    """What a stored state says is wrong (or skipped) about its person."""
    key = str(state.person_key)
    issue = health_issue(state)
    if issue is None:
        return []
    kind, name = issue
    if kind == "failure":
        return [Finding(key, name, scrub_text(state.error_detail) if state.error_detail else None)]
    if name == "no_key":
        return [Finding(key, name)]
    # "ROBINSON equals '0' failed: value is '1'" -> the condition, without the person's value
    return [Finding(key, name, (state.skip_reason or "").split(" failed", 1)[0] or None)]


def data_findings(person_key: int | str, desired: Desired) -> list[Finding]:
    """Data problems of a mapped person: one finding per category, the fields named (never their values)."""
    by_category: dict[str, list[str]] = {}
    for field_name, reason in desired.skipped_fields:
        if reason.startswith(_IGNORED_REASONS):
            continue
        name = "profiles_unread" if field_name == "profiles" else _DATA_REASONS.get(reason)
        if name is None:
            name = "invalid_phone" if "phone" in reason else "invalid_value"
        by_category.setdefault(name, []).append(field_name)
    return [Finding(str(person_key), name, ", ".join(fields)) for name, fields in by_category.items()]


@dataclass
class CategoryReport:
    category: Category
    persons: list[str] = field(default_factory=list)
    details: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return len(self.persons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category.name,
            "label": self.category.label,
            "kind": self.category.kind,
            "count": self.count,
            "persons": self.persons,
            "advice": self.category.advice,
            "details": [{"text": text, "count": n} for text, n in self.details.most_common()],
        }


@dataclass
class HealthReport:
    integration_id: str
    persons: Counter[str]  # one count per last outcome of the states read, and "known" when all were counted
    categories: dict[str, CategoryReport]
    dead_letter_queues: dict[str, int] = field(default_factory=dict)  # queue -> messages (all integrations)
    data_checked: bool = False
    counted: bool = True  # every stored person was read (a scan), not only the indexed failures
    skipped_listed: bool = True  # persons skipped by design were read
    checked_at: str = field(default_factory=utc_now)

    def failing(self) -> int:
        return len({p for c in self.categories.values() if c.category.kind == "failure" for p in c.persons})

    def persons_in(self, name: str) -> list[str]:
        """Person keys of a category, or of every failure category for `RETRY_ALL`."""
        if name == RETRY_ALL:
            keys = {p for c in self.categories.values() if c.category.kind == "failure" for p in c.persons}
            return sorted(keys, key=int)
        found = self.categories.get(name)
        return list(found.persons) if found else []

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.categories.values(), key=lambda c: (KINDS.index(c.category.kind), -c.count))
        return {
            "integration_id": self.integration_id,
            "checked_at": self.checked_at,
            "persons": dict(self.persons),
            "persons_counted": self.counted,
            "skipped_listed": self.skipped_listed,
            "failing_persons": self.failing(),
            "dead_letter_queues": self.dead_letter_queues,
            "data_checked": self.data_checked,
            "categories": [c.to_dict() for c in ordered],
        }


def build_report(
    integration_id: str,
    states: Iterable[PersonState],
    *,
    data: Iterable[Finding] = (),
    dead_lettered: Iterable[int | str] = (),
    dead_letter_queues: Mapping[str, int] | None = None,
    data_checked: bool = False,
    counted: bool = True,
    skipped_listed: bool = True,
) -> HealthReport:
    """The report of `states`: every stored state of the integration (`counted`), or only those the health
    index returned (then "known" is not counted, and `skipped_listed` says whether skipped persons were read)."""
    persons: Counter[str] = Counter()
    findings: list[Finding] = []
    for state in states:
        if counted:
            persons["known"] += 1
        persons[state.last_outcome or "unknown"] += 1
        findings.extend(state_findings(state))
    findings.extend(data)
    findings.extend(Finding(str(k), "dead_lettered") for k in dead_lettered)
    categories: dict[str, CategoryReport] = {}
    for finding in findings:
        report = categories.setdefault(finding.category, CategoryReport(category(finding.category)))
        if finding.person_key not in report.persons:
            report.persons.append(finding.person_key)
        if finding.detail:
            report.details[finding.detail] += 1
    for report in categories.values():
        report.persons.sort(key=lambda k: int(k) if k.isdigit() else 0)
    return HealthReport(
        integration_id,
        persons,
        categories,
        dead_letter_queues=dict(dead_letter_queues or {}),
        data_checked=data_checked,
        counted=counted,
        skipped_listed=skipped_listed or counted,
    )


def retry_changes(integration_id: str, person_keys: Iterable[int | str]) -> list[ContactChange]:
    """One "Resync" change per person, unique so that SQS never takes a second retry for a duplicate."""
    batch = uuid.uuid4().hex
    now = utc_now()
    return [
        ContactChange(
            integration_id=integration_id,
            person_key=key,
            operation="Resync",
            date=now,
            source="retry",
            fingerprint=f"retry-{batch}",
        )
        for key in dict.fromkeys(int(k) for k in person_keys)
    ]


def render_health(report: HealthReport, *, limit: int = 20) -> str:
    """The text an operator reads; `limit` person keys per category (0: all)."""
    p = report.persons
    outcomes = ", ".join(f"{p[o]:,} {o}" for o in ("synced", "skipped", "failed", "deleted") if p.get(o))
    if report.counted:
        known = f"  persons known: {p.get('known', 0):,}" + (f" ({outcomes})" if outcomes else "")
    else:
        known = "  persons known: not counted (add --scan: reads every stored person)"
    lines = [
        f"Sync health of integration {report.integration_id} at {report.checked_at}",
        known,
        f"  persons failing: {report.failing():,}",
    ]
    if report.dead_letter_queues:
        depths = ", ".join(f"{name} {n:,}" for name, n in report.dead_letter_queues.items())
        lines.append(f"  dead-letter queues (all integrations): {depths}")
    if not report.data_checked:
        lines.append("  data problems (missing e-mail, invalid phone ...) not checked: add --check-data")
    if not report.skipped_listed:
        lines.append("  persons skipped by design (sync conditions, no key) not listed: add --skipped")
    for kind in KINDS:
        group = sorted((c for c in report.categories.values() if c.category.kind == kind), key=lambda c: -c.count)
        if not group:
            continue
        lines += ["", KIND_TITLES[kind]]
        for c in group:
            lines.append(f"  {c.category.label} [{c.category.name}]: {c.count:,} person(s)")
            shown = c.persons if limit <= 0 else c.persons[:limit]
            more = f" ... and {c.count - len(shown):,} more" if len(shown) < c.count else ""
            lines.append(f"    persons: {', '.join(shown)}{more}")
            for text, n in c.details.most_common(3):
                lines.append(f"    {n:,} x {text}")
            lines.append(f"    what to do: {c.category.advice}")
            if kind != "skipped":
                lines.append(f"    then: efficy-sync health {report.integration_id} --retry {c.category.name}")
    waiting = sum(report.dead_letter_queues.values())
    if not report.categories and waiting:  # e.g. opt-outs no contact matches: on no person, yet not in step
        lines += [
            "",
            f"No failures recorded on persons, but {waiting:,} message(s) wait in dead-letter queues: see "
            "the runbook's alarm for each queue (docs/runbook.md), then `efficy-sync dlq redrive`.",
        ]
    elif not report.categories:
        lines += ["", "No failures: every known person is in step."]
    return "\n".join(lines)
