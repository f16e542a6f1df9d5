"""APSIS One profile exports in the simulator: how the drift reconciliation reads a section back.

Contract (contracts/apsis-one.md, "Reading a section back"): `POST /audience/profiles/exports` exports every
profile of the account with the attributes, tags and topic states the request names (at least one); the
export is asynchronous and its poll URL stays valid one day: 404 while in progress, 200 with the JSON, 410
once gone, 503 when the export failed. At most 1 export request a second and 60 downloads a minute (429
beyond). There is no endpoint that pages through a section's profiles.

What the public documentation does not give, and the simulator picks [A]:
- request body `{"section_discriminator", "attribute_discriminators", "tag_discriminators",
  "topic_discriminators"}`; answer 201 `{"export_id", "poll_url", "poll_url_expires_at"}`;
- the poll URL is an API path (bearer token, account limits) and its 200 body is
  `{"profiles": [{"keys": {keyspace: key}, "attributes": {...}, "tags": [...],
  "topics": [{"topic_discriminator", "channel_discriminator", "consent_type"}]}]}`, profiles without the
  named data included (a profile of the account is listed even when the section holds nothing for it);
- the export is ready `export_delay_ms` after the request; its snapshot is taken at its first download;
- `in_progress_status`: 404 as documented; 202 (empty JSON body) for the way many asynchronous APIs say it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from efficy_sync_tools.sims.base import json_response

if TYPE_CHECKING:
    from efficy_sync_tools.sims.apsis import ApsisSimulator, Profile

EXPORTS_PATH = "/audience/profiles/exports"


@dataclass
class ExportJob:
    export_id: str
    section: str
    attributes: list[str]
    tags: list[str]
    topics: list[str]
    ready_at: float
    expires_at: float
    snapshot: list[dict[str, Any]] | None = None
    failed: bool = False


class ProfileExports:
    """The export routes of one simulator; its state is cleared with the simulator's (`clear`)."""

    #: documented limits [D]
    export_requests_per_second = 1
    downloads_per_minute = 60
    #: [A] processing time of an export; poll URL lifetime [D] one day
    export_delay_ms = 50
    poll_url_ttl = 86400.0
    #: [D] 404 while in progress; 202 is what many asynchronous APIs answer instead (the client takes both)
    in_progress_status = 404

    def __init__(self, sim: ApsisSimulator) -> None:
        from efficy_sync_tools.sims.apsis import SlidingWindow

        self._sim = sim
        self._window_cls = SlidingWindow
        self.fail_next = False  # the next export fails (its poll answers 503)
        self.clear()
        sim.route(EXPORTS_PATH, sim._guard(self._create), methods=["POST"])
        sim.route(EXPORTS_PATH + "/<export_id>", sim._guard(self._poll), methods=["GET"])

    def clear(self) -> None:
        self._jobs: dict[str, ExportJob] = {}
        self._request_window = self._window_cls(self.export_requests_per_second, 1.0)
        self._download_window = self._window_cls(self.downloads_per_minute, 60.0)

    def expire(self, export_id: str) -> None:
        """Test hook: the poll URL of this export is past its lifetime (410 from now on)."""
        with self._sim._lock:
            self._jobs[export_id].expires_at = 0.0

    # ---- routes -------------------------------------------------------------------------------------------
    def _create(self, request: Request) -> Response:
        from efficy_sync_tools.sims.apsis import Problem

        body = self._sim._json(request)
        section = body.get("section_discriminator")
        named = {kind: body.get(f"{kind}_discriminators") or [] for kind in ("attribute", "tag", "topic")}
        if any(not isinstance(v, list) or not all(isinstance(x, str) for x in v) for v in named.values()):
            raise Problem(400, "attribute_discriminators, tag_discriminators and topic_discriminators are lists")
        if not any(named.values()):
            raise Problem(400, "name at least one attribute, tag or topic to export")
        with self._sim._lock:
            defs = self._sim._definitions.section(str(section))
            for kind, known in (("attribute", defs.attributes), ("tag", defs.tags), ("topic", defs.topics)):
                unknown = sorted(set(named[kind]) - set(known))
                if unknown:
                    raise Problem(400, f"unknown {kind}s in section {section}: {unknown}")
            if self._sim.rate_limits:
                wait = self._request_window.take()
                if wait is not None:
                    raise self._sim._too_many("more than 1 profile export request per second", wait)
            now = time.time()
            job = ExportJob(
                export_id=uuid.uuid4().hex,
                section=str(section),
                attributes=named["attribute"],
                tags=named["tag"],
                topics=named["topic"],
                ready_at=now + self.export_delay_ms / 1000,
                expires_at=now + self.poll_url_ttl,
                failed=self.fail_next,
            )
            self.fail_next = False
            self._jobs[job.export_id] = job
        expires = datetime.fromtimestamp(job.expires_at, UTC).isoformat(timespec="seconds")
        return json_response(
            {"export_id": job.export_id, "poll_url": f"{EXPORTS_PATH}/{job.export_id}", "poll_url_expires_at": expires},
            201,
        )

    def _poll(self, request: Request, export_id: str) -> Response:
        from efficy_sync_tools.sims.apsis import Problem

        with self._sim._lock:
            job = self._jobs.get(export_id)
            now = time.time()
            if job is None:
                raise Problem(410, "this export does not exist (any more)")
            if now > job.expires_at:
                raise Problem(410, "the export's poll URL has expired; request a new export")
            if job.failed:
                raise Problem(503, "the export failed; request a new one")
            if now < job.ready_at:
                if self.in_progress_status != 404:
                    return json_response({}, status=self.in_progress_status)
                raise Problem(404, "the export is in progress")
            if self._sim.rate_limits:
                wait = self._download_window.take()
                if wait is not None:
                    raise self._sim._too_many("more than 60 export downloads per minute", wait)
            if job.snapshot is None:
                job.snapshot = [self._row(p, job) for p in self._sim._profiles.values()]
            return json_response({"profiles": job.snapshot})

    @staticmethod
    def _row(profile: Profile, job: ExportJob) -> dict[str, Any]:
        from efficy_sync_tools.sims.apsis import CHANNEL_NAMES

        attributes = profile.attributes.get(job.section, {})
        tags = profile.tags.get(job.section, set())
        consents = profile.consents.get(job.section, {})
        return {
            "keys": {profile.keyspace: profile.key},
            "attributes": {a: attributes[a] for a in job.attributes if a in attributes},
            "tags": sorted(t for t in job.tags if t in tags),
            "topics": [
                {"topic_discriminator": topic, "channel_discriminator": channel, "consent_type": rec["type"]}
                for (topic, channel), rec in sorted(consents.items())
                if topic in job.topics and channel in CHANNEL_NAMES
            ],
        }
