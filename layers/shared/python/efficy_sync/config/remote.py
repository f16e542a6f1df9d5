"""Names the config expects to exist in Efficy and APSIS One, and the check of them against what the APIs
list; the check itself stays pure so it is testable offline."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from .model import IntegrationConfig
from .names import CRMID_ATTRIBUTE, EMAIL_ATTRIBUTE, EMAIL_FIELD, KEY_FIELD
from .problems import Problem, _show

_REFERENCE_KINDS = {
    ("efficy", "fields"),
    ("efficy", "crm_profiles"),
    ("efficy", "queries"),
    ("apsis", "sections"),
    ("apsis", "keyspaces"),
    ("apsis", "attributes"),
    ("apsis", "topics"),
    ("apsis", "tags"),
}


def _reference_sites(config: IntegrationConfig) -> list[tuple[str, str, Any, str]]:
    """(system, kind, value, config path) for every name the config expects to exist remotely."""
    sites: list[tuple[str, str, Any, str]] = [
        ("efficy", "fields", KEY_FIELD, "(automatic ID mapping)"),
        ("efficy", "fields", EMAIL_FIELD, "(automatic e-mail mapping)"),
        ("apsis", "attributes", EMAIL_ATTRIBUTE, "(automatic e-mail mapping)"),
        ("apsis", "attributes", CRMID_ATTRIBUTE, "(automatic ID mapping)"),
        ("apsis", "sections", config.apsis.section, "apsis.section"),
        ("apsis", "keyspaces", config.apsis.keyspace, "apsis.keyspace"),
    ]
    for i, c in enumerate(config.sync_conditions):
        sites.append(("efficy", "fields", c.field, f"sync_conditions[{i}].field"))
    for i, m in enumerate(config.field_mappings):
        sites.append(("efficy", "fields", m.efficy, f"field_mappings[{i}].efficy"))
        sites.append(("apsis", "attributes", m.apsis, f"field_mappings[{i}].apsis"))
    for i, cm in enumerate(config.consent_mappings):
        sites.append(("efficy", "crm_profiles", cm.crm_profile, f"consent_mappings[{i}].crm_profile"))
        sites.append(("apsis", "topics", cm.subscription, f"consent_mappings[{i}].subscription"))
    for i, t in enumerate(config.tags.profiles):
        sites.append(("efficy", "crm_profiles", t.crm_profile, f"tags.profiles[{i}].crm_profile"))
        sites.append(("apsis", "tags", t.tag, f"tags.profiles[{i}].tag"))
    for i, q in enumerate(config.tags.queries):
        sites.append(("efficy", "queries", q.query, f"tags.queries[{i}].query"))
        sites.append(("apsis", "tags", q.tag, f"tags.queries[{i}].tag"))
    return sites


def references(config: IntegrationConfig) -> dict[str, dict[str, list[Any]]]:
    """What must exist remotely: {"efficy": {fields, crm_profiles, queries}, "apsis": {sections, keyspaces,
    attributes, topics, tags}}, each a sorted list without duplicates."""
    result: dict[str, dict[str, set[Any]]] = {"efficy": {}, "apsis": {}}
    for system, kind in _REFERENCE_KINDS:
        result[system][kind] = set()
    for system, kind, value, _ in _reference_sites(config):
        result[system][kind].add(value)
    return {
        system: {kind: sorted(values) for kind, values in sorted(kinds.items())} for system, kinds in result.items()
    }


def _norm_ref(kind: str, value: Any) -> str:
    text = str(value).strip()
    return text.upper() if kind == "fields" else text


def check_references(config: IntegrationConfig, available: Mapping[str, Mapping[str, Iterable[Any]]]) -> list[Problem]:
    """Compares the config with what the APIs list, in the shape `references` returns. A kind missing from
    `available` could not be listed and is not checked (Efficy, for one, cannot always list its queries)."""
    problems: list[Problem] = []
    systems = {"efficy": "Efficy", "apsis": "APSIS One"}
    known: dict[tuple[str, str], dict[str, str]] = {}
    for system, kinds in available.items():
        for kind, values in kinds.items():
            known[system, kind] = {_norm_ref(kind, v): str(v) for v in values}
    for system, kind, value, path in _reference_sites(config):
        names = known.get((system, kind))
        if names is None or _norm_ref(kind, value) in names:
            continue
        close = difflib.get_close_matches(_norm_ref(kind, value), list(names), 3, cutoff=0.8)
        hint = "; did you mean " + ", ".join(repr(names[c]) for c in close) + "?" if close else ""
        label = {"queries": "query"}.get(kind, kind.replace("_", " ").rstrip("s"))
        problems.append(
            Problem(
                path,
                f"found {_show(value)}; allowed: a {label} that exists in {systems[system]} (not found there){hint}",
                found=_show(value),
                allowed=f"an existing {label}",
            )
        )
    return problems
