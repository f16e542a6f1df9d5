"""Reading a section back from APSIS One: the asynchronous profile export (the only way to list profiles).

APSIS One has no endpoint that pages through a section's profiles. `POST /audience/profiles/exports`
exports every profile of the account with the attributes, tags and topic states named in the request; the
answer's poll URL stays valid one day and answers 404 while the export runs, 200 with the JSON once done,
410 when gone and 503 when the export failed (contracts/apsis-one.md). APSIS allows one export request a
second and 60 downloads a minute: we poll at most once a second, and the client's session backs off on 429.

Request and answer shapes beyond that are not public; the simulator's choice is documented in
tools/efficy_sync_tools/sims/apsis_export.py and the README's table of assumptions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .apsis import CHANNELS, ApsisClient
from .errors import ApiError, ApsisUnavailable, NotFound

CHANNEL_NAMES = {disc: name for name, disc in CHANNELS.items()}
EXPORTS_PATH = "/audience/profiles/exports"
MIN_POLL_SECONDS = 1.0  # 60 downloads a minute: never poll faster than once a second


class ExportGone(ApsisUnavailable):
    """The export's poll URL answered 410: request a new export."""


@dataclass
class ExportedProfile:
    """One profile of the section as APSIS One holds it, keyed in the integration's keyspace."""

    key: str
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    consents: dict[tuple[str, str], str] = field(default_factory=dict)  # (topic, "email"|"sms") -> type
    complete: bool = True  # False: read one by one (consents only); its attributes and tags are unknown


def request_export(client: ApsisClient, *, attributes: list[str], tags: list[str], topics: list[str]) -> str:
    """Starts an export of the section's named data; returns its poll URL (a path on the API)."""
    body = {
        "section_discriminator": client.section,
        "attribute_discriminators": sorted(set(attributes)),
        "tag_discriminators": sorted(set(tags)),
        "topic_discriminators": sorted(set(topics)),
    }
    answer = client._call("export_profiles", "POST", EXPORTS_PATH, body=body).json()
    poll_url = answer.get("poll_url")
    if not isinstance(poll_url, str) or not poll_url:
        raise ApsisUnavailable("APSIS export_profiles: the answer holds no poll_url")
    return poll_url


def download_export(
    client: ApsisClient, poll_url: str, *, poll_interval: float = MIN_POLL_SECONDS, timeout: float = 600
) -> dict[str, ExportedProfile]:
    """Polls until the export is ready and returns the profiles keyed in the client's keyspace (profiles of
    other keyspaces are not ours and are left out). Raises ExportGone on 410, ApsisUnavailable when it fails
    (503) or is not ready within `timeout` seconds."""
    path = poll_url.removeprefix(client.base_url)
    deadline = time.monotonic() + timeout
    interval = max(poll_interval, MIN_POLL_SECONDS)
    while True:
        try:
            payload = client._call("download_export", "GET", path).json()
            break
        except NotFound:  # in progress
            pass
        except ApiError as exc:
            if exc.status == 410:
                raise ExportGone(f"APSIS export {path}: gone (410); request a new one", status=410) from None
            raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApsisUnavailable(f"APSIS export {path} not ready after {timeout}s")
        time.sleep(min(interval, remaining))
    return parse_export(payload, client.keyspace)


def parse_export(payload: Any, keyspace: str) -> dict[str, ExportedProfile]:
    """The export's JSON as ExportedProfile by key; an answer we cannot read raises (never read as "empty")."""
    rows = payload.get("profiles") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise ApsisUnavailable("APSIS export: the answer holds no profiles list")
    out: dict[str, ExportedProfile] = {}
    for row in rows:
        key = (row.get("keys") or {}).get(keyspace) if isinstance(row, dict) else None
        if key is None:
            continue
        consents = {
            (str(t.get("topic_discriminator")), CHANNEL_NAMES.get(str(t.get("channel_discriminator")), "")): str(
                t.get("consent_type")
            )
            for t in row.get("topics") or []
        }
        out[str(key)] = ExportedProfile(
            key=str(key),
            attributes=dict(row.get("attributes") or {}),
            tags=set(row.get("tags") or []),
            consents=consents,
        )
    return out


def export_section(
    client: ApsisClient,
    *,
    attributes: list[str],
    tags: list[str],
    topics: list[str],
    poll_url: str | None = None,
    timeout: float = 600,
) -> tuple[str, dict[str, ExportedProfile]]:
    """Downloads `poll_url` (a resumed run's export) or a new export; a gone one is requested again once.
    Returns the poll URL used and the profiles."""
    if poll_url:
        try:
            return poll_url, download_export(client, poll_url, timeout=timeout)
        except ExportGone:
            pass
    poll_url = request_export(client, attributes=attributes, tags=tags, topics=topics)
    return poll_url, download_export(client, poll_url, timeout=timeout)


def probe_profile(client: ApsisClient, key: str, topics: set[str]) -> ExportedProfile | None:
    """The fallback when the account cannot export: one profile's consents (a documented per-profile read);
    None when APSIS One has no such profile. Attributes and tags cannot be read this way."""
    try:
        items = client.get_consents(key)
    except NotFound:
        return None
    consents = {
        (str(i.get("topic_discriminator")), CHANNEL_NAMES.get(str(i.get("channel_discriminator")), "")): str(
            i.get("type")
        )
        for i in items
        if i.get("topic_discriminator") in topics
    }
    return ExportedProfile(key=key, consents=consents, complete=False)
