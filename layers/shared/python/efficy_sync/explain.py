"""`explain`: why a person did or did not sync, and what the next sync would send.

Support reads this to answer "why is Jo not in APSIS?", so it shows every condition, every mapped value, every
consent decision with its reason, the planned calls against what was last pushed, and the last outcome. Personal
values are masked: the report may be pasted into a ticket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from efficy_sync.conditions import evaluate
from efficy_sync.config import CRMID_ATTRIBUTE, EMAIL_ATTRIBUTE, MOBILE_ATTRIBUTE, IntegrationConfig
from efficy_sync.existing_optouts import worth_reading
from efficy_sync.mapping import Desired, map_person
from efficy_sync.person_plan import (
    CreateProfile,
    DeleteProfile,
    Operation,
    PatchAttributes,
    PatchTags,
    SetConsent,
    consent_decisions,
    is_stale,
    plan_for_skip,
    plan_operations,
)
from efficy_sync.pii import hash_key, looks_like_pii, mask_email, mask_phone, mask_value
from efficy_sync.state import UNKNOWN, PersonState, value_hash


def mask_attribute(cfg: IntegrationConfig, attribute: str, value: Any) -> Any:
    """Masks a mapped value by what the attribute holds (e-mail, phone) or by its field names (names, ...)."""
    if value is None or attribute == CRMID_ATTRIBUTE:
        return value
    mapping = next((m for m in cfg.field_mappings if m.apsis == attribute), None)
    kind = {EMAIL_ATTRIBUTE: "email", MOBILE_ATTRIBUTE: "phone"}.get(attribute) or (mapping.type if mapping else None)
    if kind == "email":
        return mask_email(str(value))
    if kind == "phone":
        return mask_phone(str(value))
    name = mapping.efficy if mapping and looks_like_pii(mapping.efficy) else attribute
    return mask_value(name, value)


def describe_operation(cfg: IntegrationConfig, op: Operation) -> str:
    """One line per APSIS call, values masked."""
    if isinstance(op, CreateProfile):
        return f"create profile {op.key} in {cfg.apsis.keyspace}"
    if isinstance(op, PatchAttributes):
        parts = [
            f"{a}={mask_attribute(cfg, a, v)!r}" if v is not None else f"{a}=null" for a, v in op.attributes.items()
        ]
        return "patch attributes: " + ", ".join(parts)
    if isinstance(op, SetConsent):
        return f"set consent {op.type} on {op.topic} ({op.channel})"
    if isinstance(op, PatchTags):
        return "tags: " + ", ".join(f"{'+' if v else '-'}{t}" for t, v in op.tags.items())
    if isinstance(op, DeleteProfile):
        return f"delete profile {op.key}"
    raise TypeError(f"unknown operation {op!r}")


def _last(state: PersonState | None) -> dict[str, Any]:
    if state is None:
        return {"known": False}
    return {
        "known": True,
        "exists_in_apsis": state.exists_in_apsis,
        "change_stamp": state.change_stamp,
        "outcome": state.last_outcome,
        "error_category": state.error_category,
        "error_detail": state.error_detail,
        "skip_reason": state.skip_reason,
        "updated_at": state.updated_at,
    }


def _attributes(cfg: IntegrationConfig, desired: Desired, state: PersonState | None) -> list[dict[str, Any]]:
    hashes = state.attribute_hashes if state and state.exists_in_apsis else {}
    rows = []
    for name, value in desired.attributes.items():
        if value is None:
            status = "cleared" if name in hashes else "empty"
        elif name not in hashes:
            status = "new"
        else:
            status = "unchanged" if hashes[name] == value_hash(value) else "changed"
        rows.append({"attribute": name, "value": mask_attribute(cfg, name, value), "status": status})
    for name in sorted(desired.skipped_attributes):
        rows.append({"attribute": name, "value": None, "status": "skipped (left as it is in APSIS One)"})
    return rows


def _consents(cfg: IntegrationConfig, desired: Desired, state: PersonState | None) -> list[dict[str, Any]]:
    decisions = consent_decisions(desired, state)
    rows = []
    for c in cfg.consent_mappings:
        slot = (c.subscription, c.channel)
        row: dict[str, Any] = {
            "topic": c.subscription,
            "channel": c.channel,
            "crm_profile": c.crm_profile,
            "member": desired.memberships.get(slot),
        }
        if slot not in decisions:
            reasons = dict(desired.skipped_fields)
            reason = reasons.get(f"consent {c.subscription} ({c.channel})") or reasons.get("profiles")
            row.update(decision=None, reason=reason or "CRM profiles not loaded", would_send=False)
        else:
            decision, last, record = decisions[slot]
            reason = decision.reason
            first = decision.type == "opt-in" and last in (None, UNKNOWN) and record is None  # first_opt_ins
            if first and worth_reading(cfg, state):  # explain itself does not call APSIS
                reason += "; the sync reads APSIS One's consents first and keeps an opt-out held there"
            row.update(
                last_pushed=last,
                optout=record.model_dump(exclude_none=True) if record else None,
                decision=decision.type,
                reason=reason,
                would_send=decision.type is not None and decision.type != last,
            )
        rows.append(row)
    return rows


def explain(
    cfg: IntegrationConfig,
    person: Mapping[str, Any] | None,
    state: PersonState | None,
    query_tags: set[str] | None = None,
) -> dict[str, Any]:
    """A JSON-able report; `render_explain` turns it into text. `person` None: not found in Efficy."""
    report: dict[str, Any] = {"integration_id": cfg.integration_id, "last": _last(state)}
    if person is None:
        report.update(found_in_efficy=False, decision="not found in Efficy", operations=[])
        if state is not None:
            report["person_key"] = state.person_key
            report["on_delete"] = cfg.on_delete
        return report
    outcomes = evaluate(cfg.sync_conditions, person).outcomes
    report["found_in_efficy"] = True
    report["conditions"] = [
        {"condition": o.condition.describe(), "passed": o.passed, "actual": o.actual, "reason": o.reason}
        for o in outcomes
    ]
    result = map_person(cfg, person, query_tags=query_tags)
    report["person_key"] = result.profile_key
    report["person_key_hash"] = hash_key(result.profile_key) if result.profile_key else None
    report["change_stamp"] = result.change_stamp
    report["stale"] = is_stale(result.change_stamp, state, result.asked_at, result.answered_at)
    if isinstance(result, Desired):
        ops = plan_operations(result, state)
        report.update(
            decision="sync",
            email=mask_email(result.email) if result.email else None,
            mobile=mask_phone(result.mobile) if result.mobile else None,
            attributes=_attributes(cfg, result, state),
            skipped_fields=[{"field": f, "reason": r} for f, r in result.skipped_fields],
            consents=_consents(cfg, result, state),
            tags=[
                {
                    "tag": t,
                    "desired": v,
                    # "unknown": the last call never reported back; the next sync sends the tag again
                    "last_pushed": "unknown"
                    if state and t in state.tags_unknown
                    else (state.tags.get(t) if state else None),
                }
                for t, v in sorted(result.tags.items())
            ],
        )
    else:
        ops = plan_for_skip(result, state, cfg.on_condition_lost, managed_tags=cfg.managed_tags())
        report.update(
            decision="skip",
            skip_reason=result.reason,
            failed_condition=result.condition.describe() if result.condition else None,
            on_condition_lost=cfg.on_condition_lost,
        )
    report["operations"] = [describe_operation(cfg, op) for op in ops]
    return report


def optout_status(record: Mapping[str, Any] | None) -> str:
    """Where the stored APSIS opt-out record of a consent row stands. The runbook (OptOutDLQNotEmptyAlarm) has
    an admin check a write-back with `explain`: a person already out of the CRM profile reads the same in the
    consent decision whether the write-back confirmed the record or never ran to its end (dead-lettered), and
    only a confirmed record lets a later CRM re-add opt the person in again."""
    if not record:
        return ""
    if record.get("confirmed"):
        stamp = record.get("confirmed_stamp")
        return f" [APSIS opt-out record: confirmed by Efficy{f' (stamp {stamp})' if stamp else ''}]"
    if record.get("awaiting_writeback"):
        return " [APSIS opt-out record: awaiting its write-back to Efficy, not confirmed]"
    return f" [APSIS opt-out record ({record.get('source')}): not confirmed by Efficy yet]"


def render_explain(report: Mapping[str, Any]) -> str:
    """The report as the CLI prints it."""
    key = report.get("person_key") or "?"
    lines = [f"person {key} in integration {report['integration_id']}"]
    if not report.get("found_in_efficy"):
        lines.append(
            "  not found in Efficy" + (f" (on_delete: {report['on_delete']})" if "on_delete" in report else "")
        )
    else:
        lines.append(f"  Efficy change stamp: {report.get('change_stamp') or 'unknown'}")
        if report.get("stale"):
            lines.append("  this snapshot is older than the one last applied: nothing would be sent")
        lines.append("conditions:")
        for c in report.get("conditions") or []:
            lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['reason']}")
        if not report.get("conditions"):
            lines.append("  (none: every person is synced)")
        if report["decision"] == "skip":
            lines.append(f"not synced: {report['skip_reason']}")
            lines.append(f"  a person who stops matching: on_condition_lost = {report['on_condition_lost']}")
        else:
            lines.append(f"synced as profile {key}: e-mail {report.get('email') or '(none)'}")
            lines.append("attributes:")
            lines += [f"  {a['attribute']} = {a['value']!r} [{a['status']}]" for a in report["attributes"]]
            if report["skipped_fields"]:
                lines.append("skipped:")
                lines += [f"  {s['field']}: {s['reason']}" for s in report["skipped_fields"]]
            lines.append("consents:")
            for c in report["consents"]:
                send = " -> would send" if c["would_send"] else ""
                lines.append(
                    f"  {c['topic']} ({c['channel']}, CRM profile {c['crm_profile']}): "
                    f"{c['decision'] or 'nothing'} - {c['reason']}{optout_status(c.get('optout'))}{send}"
                )
            if report["tags"]:
                lines.append("tags:")
                lines += [f"  {t['tag']}: {t['desired']} (last pushed: {t['last_pushed']})" for t in report["tags"]]
    ops = report.get("operations") or []
    lines.append("would send:" if ops else "would send: nothing")
    lines += [f"  {op}" for op in ops]
    last = report["last"]
    if last.get("known"):
        error = (
            f", error {last['error_category']}: {last.get('error_detail') or ''}" if last.get("error_category") else ""
        )
        lines.append(
            f"last sync: {last.get('outcome') or 'never'}, state stored at {last.get('updated_at')}"
            f" (stamp {last.get('change_stamp') or 'unknown'}, in APSIS One: {last.get('exists_in_apsis')}){error}"
        )
    else:
        lines.append("last sync: never (no state stored for this person)")
    return "\n".join(lines)
