"""Checks that span several entries (duplicates, conflicts). They work on raw, possibly invalid data so the
loader reports them together with per-field problems; the model runs them too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..values import whole_number
from .names import MOBILE_ATTRIBUTE
from .problems import Problem, _problem


def _items(data: Mapping[str, Any], *keys: str) -> list[tuple[int, Mapping[str, Any]]]:
    node: Any = data
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, list):
        return []
    return [(i, item) for i, item in enumerate(node) if isinstance(item, Mapping)]


def _normalized(value: Any) -> str:
    """A config value as compared for duplicates and conflicts: text, trimmed, case-insensitive."""
    return str(value).strip().lower() if value is not None else ""


def _profile_id(value: Any) -> str:
    """A CRM profile id as the model reads it: 12, 12.0, "012" and "+12" are one profile (compared as text,
    "12.0" and "12" passed this check while the model, comparing numbers, refused them: a traceback)."""
    number = whole_number(value)
    return str(number) if number is not None else _normalized(value)


def cross_check(data: Mapping[str, Any]) -> list[Problem]:
    """Duplicates and conflicts between entries. Works on raw (possibly invalid) data so the loader can report
    these together with per-field problems."""
    problems: list[Problem] = []
    problems += _check_consents(data)
    problems += _check_field_mappings(data)
    problems += _check_tags(data)
    return problems


def _check_consents(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], int] = {}
    by_profile: dict[tuple[str, str], tuple[int, Any]] = {}
    by_topic: dict[tuple[str, str], tuple[int, Any]] = {}
    # exactly as the sync finds it (mapping.map_person): `...attributes.Mobile` would pass a case-insensitive check,
    # and then every SMS opt-in would be skipped for want of a mobile number
    mobile_mapped = any(str(m.get("apsis", "")).strip() == MOBILE_ATTRIBUTE for _, m in _items(data, "field_mappings"))
    for i, m in _items(data, "consent_mappings"):
        profile, topic, channel = (
            _profile_id(m.get("crm_profile")),
            _normalized(m.get("subscription")),
            _normalized(m.get("channel")),
        )
        path = f"consent_mappings[{i}]"
        if (profile, topic, channel) in seen:
            problems.append(
                Problem(path, f"duplicate of consent_mappings[{seen[profile, topic, channel]}]; remove one")
            )
            continue
        seen[profile, topic, channel] = i
        if (profile, channel) in by_profile:
            j, other = by_profile[profile, channel]
            problems.append(
                _problem(
                    f"{path}.subscription",
                    m.get("subscription"),
                    f"one subscription per CRM profile and channel: consent_mappings[{j}] already maps profile "
                    f"{m.get('crm_profile')} on {channel} to {other!r}",
                )
            )
        else:
            by_profile[profile, channel] = (i, m.get("subscription"))
        if (topic, channel) in by_topic:
            j, other = by_topic[topic, channel]
            problems.append(
                _problem(
                    f"{path}.crm_profile",
                    m.get("crm_profile"),
                    f"one CRM profile per subscription and channel: consent_mappings[{j}] already maps profile "
                    f"{other} to {m.get('subscription')!r} on {channel}",
                )
            )
        else:
            by_topic[topic, channel] = (i, m.get("crm_profile"))
        if channel == "sms" and not mobile_mapped:
            problems.append(
                _problem(
                    f"{path}.channel",
                    m.get("channel"),
                    f"'email'; an sms consent needs a field mapping to {MOBILE_ATTRIBUTE} (type phone)",
                )
            )
    return problems


def _check_field_mappings(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    targets: dict[str, int] = {}
    for i, m in _items(data, "field_mappings"):
        target = _normalized(m.get("apsis"))
        if target in targets:
            problems.append(
                _problem(
                    f"field_mappings[{i}].apsis",
                    m.get("apsis"),
                    f"an attribute no other mapping writes (field_mappings[{targets[target]}] already does)",
                )
            )
        else:
            targets[target] = i
        if target == MOBILE_ATTRIBUTE and m.get("type", "string") != "phone":
            problems.append(
                _problem(f"field_mappings[{i}].type", m.get("type", "string"), f"'phone' for {MOBILE_ATTRIBUTE}")
            )
    return problems


def _check_tags(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    for kind in ("profiles", "queries"):
        for i, t in _items(data, "tags", kind):
            tag, path = _normalized(t.get("tag")), f"tags.{kind}[{i}]"
            if tag in owners:
                problems.append(
                    _problem(
                        f"{path}.tag",
                        t.get("tag"),
                        f"a tag no other entry sets ({owners[tag]} already does: a profile tag is removed from "
                        "non-members, which would undo the other)",
                    )
                )
            else:
                owners[tag] = path
    return problems
