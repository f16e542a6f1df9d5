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

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .apsis import ApsisClient
from .apsis_answers import IN_PROGRESS_ANSWERS
from .apsis_scope import consents_or_gone
from .apsis_transport import MORE_PAGES
from .consent_entries import CHANNEL_NAMES as CHANNEL_NAMES
from .consent_entries import CONSENT_TYPES as CONSENT_TYPES
from .consent_entries import consent_entry as consent_entry
from .errors import ApiError, ApsisUnavailable, NotFound
from .json_stream import read_object
from .list_pages import says_more

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
    answer = client._object(client._call("export_profiles", "POST", EXPORTS_PATH, body=body), "export_profiles")
    poll_url = answer.get("poll_url")
    if not isinstance(poll_url, str) or not poll_url:
        raise ApsisUnavailable("APSIS export_profiles: the answer holds no poll_url")
    return poll_url


#: bytes read from the export's answer at a time: the download is never held whole (see ExportedProfiles)
DOWNLOAD_CHUNK_BYTES = 256 * 1024


def download_export(
    client: ApsisClient,
    poll_url: str,
    *,
    poll_interval: float = MIN_POLL_SECONDS,
    timeout: float = 600,
    keep: Callable[[str], bool] | None = None,
) -> ExportedProfiles:
    """Polls until the export is ready and returns the profiles keyed in the client's keyspace (profiles of
    other keyspaces are not ours and are left out), those `keep` refuses too. Raises ExportGone on 410,
    ApsisUnavailable when it fails (503) or is not ready within `timeout` seconds."""
    path = poll_url.removeprefix(client.base_url)
    deadline = time.monotonic() + timeout
    interval = max(poll_interval, MIN_POLL_SECONDS)
    while True:
        try:
            response = client._call("download_export", "GET", path, stream=True)  # read as it arrives: below
            # APSIS documents 404 in progress; a 202/204 read as the export failed the reconciliation at once
            if response.status_code not in IN_PROGRESS_ANSWERS:
                break
            response.close()
        except NotFound:  # in progress (as documented)
            pass
        except ApiError as exc:
            if exc.status == 410:
                raise ExportGone(f"APSIS export {path}: gone (410); request a new one", status=410) from None
            raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApsisUnavailable(f"APSIS export {path} not ready after {timeout}s")
        time.sleep(min(interval, remaining))
    profiles = ExportedProfiles()
    try:
        # the whole account's profiles in one document: each is read, checked and kept (compact) or dropped as
        # it arrives; held whole (bytes, text, tree, objects), an account of ~250,000 outgrew the Lambda's memory
        members, count = read_object(
            response.iter_content(DOWNLOAD_CHUNK_BYTES), "profiles", _row_reader(client.keyspace, keep, profiles)
        )
    except (ValueError, UnicodeDecodeError):  # NDJSON, CSV, a cut body: a format we do not read is no export
        raise ApsisUnavailable(f"APSIS export {path}: the answer is not one JSON document") from None
    except requests.RequestException as exc:  # the body broke off after the answer began
        raise ApsisUnavailable(f"APSIS export {path}: the download broke off ({type(exc).__name__})") from None
    finally:
        response.close()
    _check_whole(members, count)
    return profiles


#: what would say an export answer is one page of several: reconcile must never take part of the profiles for
#: all of them (the rest would be "missing" drift, whose repair re-sends their consents)
_MORE_PAGES = MORE_PAGES


class ExportedProfiles(Mapping[str, ExportedProfile]):
    """An export's profiles by key, each held as one short JSON text whose names (attributes, tags, topics,
    channels, types) are numbers in a table the export shares, and read back as an ExportedProfile when asked
    for: as objects, a profile took ~4 KB, and an export holds the whole account."""

    def __init__(self) -> None:
        self._rows: dict[str, bytes] = {}
        self._numbers: dict[str, int] = {}
        self._names: list[str] = []

    def add(self, profile: ExportedProfile) -> None:
        number = self._number
        attributes = [x for name, value in profile.attributes.items() for x in (number(name), value)]
        consents = [number(x) for (topic, channel), kind in profile.consents.items() for x in (topic, channel, kind)]
        row = [attributes, [number(tag) for tag in profile.tags], consents]
        self._rows[profile.key] = json.dumps(row, separators=(",", ":")).encode("ascii")  # \u escapes: ASCII

    def _number(self, name: str) -> int:
        number = self._numbers.get(name)
        if number is None:
            number = self._numbers[name] = len(self._names)
            self._names.append(name)
        return number

    def __getitem__(self, key: str) -> ExportedProfile:
        attributes, tags, consents = json.loads(self._rows[key])
        name = self._names.__getitem__
        return ExportedProfile(
            key=key,
            attributes={name(attributes[i]): attributes[i + 1] for i in range(0, len(attributes), 2)},
            tags={name(tag) for tag in tags},
            consents={
                (name(consents[i]), name(consents[i + 1])): name(consents[i + 2]) for i in range(0, len(consents), 3)
            },
        )

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def parse_export(payload: Any, keyspace: str, keep: Callable[[str], bool] | None = None) -> ExportedProfiles:
    """The export's JSON as ExportedProfile by key; an answer we cannot read raises (never read as "empty", never
    read as complete when it says there is more). The shape is not public (contracts/apsis-one.md §9): consent
    entries are read under `consent_type` or `type` in any case, channels in full or short form."""
    rows = payload.get("profiles") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise ApsisUnavailable("APSIS export: the answer holds no profiles list")
    profiles = ExportedProfiles()
    read = _row_reader(keyspace, keep, profiles)
    for row in rows:
        read(row)
    _check_whole(payload, len(rows))
    return profiles


def _check_whole(members: dict[str, Any], count: int) -> None:
    """`count` rows (-1: no list of profiles) are the whole export: no next page named, no larger total."""
    if count < 0:
        raise ApsisUnavailable("APSIS export: the answer holds no profiles list")
    if says_more(members, count):
        raise ApsisUnavailable("APSIS export: the answer is one page of several; not read as the whole section")


def _row_reader(keyspace: str, keep: Callable[[str], bool] | None, into: ExportedProfiles) -> Callable[[Any], None]:
    """Reads one exported row into `into`. Every row of our keyspace is read (one we cannot read refuses the
    export, kept or not); only those `keep` takes are held."""

    def read(row: Any) -> None:
        if not isinstance(row, dict):
            raise ApsisUnavailable("APSIS export: a profile entry is not an object")
        key = _key_of(row, keyspace)
        if key is None:
            return  # a profile of another keyspace: not ours
        profile = ExportedProfile(
            key=key,
            attributes=dict(row.get("attributes") or {}),
            tags=_tags_of(row.get("tags")),
            consents=dict(consent_entry(t) for t in _topics(row)),
        )
        if keep is None or keep(key):
            into.add(profile)

    return read


def _key_of(row: dict[str, Any], keyspace: str) -> str | None:
    """The row's key in our keyspace: `keys` as {keyspace: key} or as [{keyspace_discriminator, profile_key}]
    (or `keyspace` / `key`), keyspaces compared without case. A key entry naming no keyspace raises: read as
    "another keyspace's", every profile looked missing from the export."""
    wanted = keyspace.casefold()
    keys = row.get("keys")
    if isinstance(keys, dict):
        key = next((v for k, v in keys.items() if str(k).casefold() == wanted), None)
    elif isinstance(keys, list) and all(isinstance(k, dict) for k in keys):
        key = None
        for entry in keys:
            space = entry.get("keyspace_discriminator", entry.get("keyspace"))
            if not isinstance(space, str):
                raise ApsisUnavailable("APSIS export: a profile key names no keyspace")
            if space.casefold() == wanted:
                key = entry.get("profile_key", entry.get("key"))
    elif keys is None and str(row.get("keyspace_discriminator", row.get("keyspace"))).casefold() == wanted:
        key = row.get("profile_key")
    else:
        raise ApsisUnavailable("APSIS export: a profile's keys are in a shape we cannot read")
    return None if key is None else str(key)


def _topics(row: dict[str, Any]) -> list[dict[str, Any]]:
    topics = row.get("topics") or row.get("consents") or []
    if not isinstance(topics, list) or not all(isinstance(t, dict) for t in topics):
        raise ApsisUnavailable("APSIS export: a profile's consents are in a shape we cannot read")
    return topics


def _tags_of(value: Any) -> set[str]:
    """Tag names, given as names, as {discriminator|name|tag, value} objects or as one {tag: value} mapping (the
    shape of our tag PATCH); a false value is not set. Iterated as a list, a mapping gave its keys, so a tag set
    to false read as set and reconcile never repaired it."""
    tags: set[str] = set()
    if isinstance(value, dict):
        value = [{"tag": name, "value": on} for name, on in value.items()]
    for tag in value or []:
        if isinstance(tag, str):
            tags.add(tag)
            continue
        name = (tag.get("discriminator") or tag.get("name") or tag.get("tag")) if isinstance(tag, dict) else None
        if name is None:
            raise ApsisUnavailable("APSIS export: a tag is in a shape we cannot read")
        if tag.get("value", True) not in (False, "false", 0, None):
            tags.add(str(name))
    return tags


def export_section(
    client: ApsisClient,
    *,
    attributes: list[str],
    tags: list[str],
    topics: list[str],
    poll_url: str | None = None,
    timeout: float = 600,
    keep: Callable[[str], bool] | None = None,
) -> tuple[str, ExportedProfiles]:
    """Downloads `poll_url` (a resumed run's export) or a new export; a gone (410) or failed (503) one is
    requested again once: the resumed run's cursor keeps its poll URL, so a failed export answered 503 to
    every retry of the run until the URL expired, a day later. (An outage answering 503 fails the new request
    too, and the run with it, as before.) Returns the poll URL used and the profiles (those `keep` takes: by
    default all of our keyspace)."""
    if poll_url:
        try:
            return poll_url, download_export(client, poll_url, timeout=timeout, keep=keep)
        except ApiError as exc:
            if exc.status not in (410, 503):
                raise
    poll_url = request_export(client, attributes=attributes, tags=tags, topics=topics)
    return poll_url, download_export(client, poll_url, timeout=timeout, keep=keep)


def probe_profile(client: ApsisClient, key: str, topics: set[str]) -> ExportedProfile | None:
    """The fallback when the account cannot export: one profile's consents (a documented per-profile read);
    None when APSIS One has no such profile. Attributes and tags cannot be read this way."""
    items = consents_or_gone(client, key)  # a section or keyspace gone is no profile gone
    if items is None:
        return None
    consents = dict(consent_entry(i) for i in items if i.get("topic_discriminator") in topics)
    return ExportedProfile(key=key, consents=consents, complete=False)
