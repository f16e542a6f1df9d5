"""APSIS One simulator: the product API the sync calls, and a `/_sim` control API for tests, the demo and benchmarks.

Behaviour follows contracts/apsis-one.md ("Recommended contract for a simulator"). Where the public docs are
silent the simulator has to pick something; those choices are marked [A] (assumed) and sit behind a constructor
flag or an instance attribute, so they can be corrected once APSIS confirms the real behaviour.

State is in memory and guarded by the base class lock. `reset()` clears data (profiles, imports, deliveries,
rate-limit state, faults, call counts) but keeps configuration (definitions, webhook target, credentials,
issued tokens), so a local stack that pointed the webhook at its opt-out route keeps working after a reset.
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import hmac
import io
import json
import math
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from werkzeug.wrappers import Request, Response

from efficy_sync_tools.sims.apsis_export import ProfileExports
from efficy_sync_tools.sims.base import SimServer, json_response

FIXTURE = Path(__file__).with_name("apsis_definitions.json")
CHANNELS = {"email": "com.apsis1.channels.email", "sms": "com.apsis1.channels.sms"}
CHANNEL_NAMES = {disc: name for name, disc in CHANNELS.items()}
CONSENT_TYPES = ("opt-in", "opt-out")
DEFAULT_KEYSPACE = "com.apsis1.keyspaces.crm-id"
#: the attribute each built-in keyspace's key is written to when a profile is created in it
KEYSPACE_ATTRIBUTES = {
    "com.apsis1.keyspaces.crm-id": "com.apsis1.attributes.crmid",
    "com.apsis1.keyspaces.email": "com.apsis1.attributes.email",
    "com.apsis1.keyspaces.mobile": "com.apsis1.attributes.mobile",
}
EMAIL_ATTRIBUTE = "com.apsis1.attributes.email"
MOBILE_ATTRIBUTE = "com.apsis1.attributes.mobile"
PENDING_IMPORT = ("waiting_for_file", "queued", "in_progress")
TRUTHY = {"true", "1", "yes", "y"}
FALSY = {"false", "0", "no", "n"}
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Problem(Exception):
    """Raised inside a handler; rendered as application/problem+json."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


# ---- rate limiting --------------------------------------------------------------------------------------
class TokenBucket:
    """Requests per second with a burst of one second's worth, as APSIS documents its limits."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SlidingWindow:
    """At most `limit` accepted requests per `period` seconds (token endpoint, import requests)."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.stamps: deque[float] = deque()

    def take(self) -> float | None:
        """None when accepted, else the seconds until a slot frees."""
        now = time.monotonic()
        while self.stamps and now - self.stamps[0] >= self.period:
            self.stamps.popleft()
        if len(self.stamps) >= self.limit:
            return self.period - (now - self.stamps[0])
        self.stamps.append(now)
        return None


# ---- definitions ----------------------------------------------------------------------------------------
@dataclass
class SectionDefinitions:
    item: dict[str, Any]
    attributes: dict[str, dict[str, Any]]
    versions: dict[str, tuple[str, bool]]  # version id -> (attribute discriminator, deprecated)
    topics: dict[str, dict[str, Any]]
    tags: dict[str, dict[str, Any]]

    def topic_accepts(self, topic: str, channel: str) -> bool:
        """[A] a topic that names a channel takes consents on that channel only; one that names none takes both."""
        item = self.topics[topic]
        allowed = item.get("channel_discriminators") or (
            [item["channel_discriminator"]] if item.get("channel_discriminator") else list(CHANNELS.values())
        )
        return channel in allowed


class Definitions:
    """The fixture, validated and indexed: what exists in the simulated account."""

    def __init__(self, raw: dict[str, Any]) -> None:
        if not isinstance(raw, dict) or not isinstance(raw.get("sections"), list) or not raw["sections"]:
            raise ValueError("definitions need a non-empty 'sections' list")
        if not isinstance(raw.get("keyspaces"), list):
            raise ValueError("definitions need a 'keyspaces' list")
        self.raw = copy.deepcopy(raw)
        self.sections: dict[str, SectionDefinitions] = {}
        for section in self.raw["sections"]:
            self.sections[section["discriminator"]] = self._index_section(section)
        self.keyspaces = {item["discriminator"]: item for item in self.raw["keyspaces"]}
        self.default_section = self.raw["sections"][0]["discriminator"]

    @staticmethod
    def _index_section(section: dict[str, Any]) -> SectionDefinitions:
        attributes = {a["discriminator"]: a for a in section.get("attributes", [])}
        versions = {
            v["id"]: (a["discriminator"], v.get("deprecated_at") is not None)
            for a in attributes.values()
            for v in a.get("versions", [])
        }
        item = {k: v for k, v in section.items() if k not in ("attributes", "topics", "tags")}
        return SectionDefinitions(
            item=item,
            attributes=attributes,
            versions=versions,
            topics={t["discriminator"]: t for t in section.get("topics", [])},
            tags={t["discriminator"]: t for t in section.get("tags", [])},
        )

    def section(self, discriminator: str) -> SectionDefinitions:
        if discriminator not in self.sections:
            raise Problem(404, f"section {discriminator!r} does not exist")
        return self.sections[discriminator]

    def keyspace(self, discriminator: str) -> dict[str, Any]:
        if discriminator not in self.keyspaces:
            raise Problem(404, f"keyspace {discriminator!r} does not exist")
        return self.keyspaces[discriminator]


# ---- profiles -------------------------------------------------------------------------------------------
@dataclass
class Profile:
    keyspace: str
    key: str
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> attribute -> value
    tags: dict[str, set[str]] = field(default_factory=dict)  # section -> tags
    consents: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)

    def section_attributes(self, section: str) -> dict[str, Any]:
        return self.attributes.setdefault(section, {})

    def section_tags(self, section: str) -> set[str]:
        return self.tags.setdefault(section, set())

    def section_consents(self, section: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.consents.setdefault(section, {})

    def view(self) -> dict[str, Any]:
        """The /_sim shape. Sections are merged: the sync uses one section per integration."""
        attributes: dict[str, Any] = {}
        for values in self.attributes.values():
            attributes.update(values)
        consents = [
            {"topic": topic, "channel": CHANNEL_NAMES.get(channel, channel), "type": rec["type"], "section": section}
            for section, records in self.consents.items()
            for (topic, channel), rec in sorted(records.items())
        ]
        tags = sorted({tag for values in self.tags.values() for tag in values})
        return {
            "keyspace": self.keyspace,
            "key": self.key,
            "attributes": attributes,
            "tags": tags,
            "consents": consents,
        }


@dataclass
class ImportJob:
    import_id: str
    section: str
    plan: ImportPlan
    policy: str
    expires_at: float
    status: str = "waiting_for_file"
    report: dict[str, Any] | None = None
    timer: threading.Timer | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    file: bytes | None = None  # kept for tests that check the layout sent (`imports()`)
    #: the simulator's clock when the import was created and when it ended (tests: what ran at once)
    created_at: float = 0.0
    ended_at: float | None = None

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"import_id": self.import_id, "status": self.status}
        if self.report is not None:
            result["report"] = self.report
        return {"result": result}


@dataclass
class Delivery:
    """One automation webhook call and its retries (the MA flow's Webhook node) [A retry policy]."""

    id: str
    url: str
    method: str
    headers: dict[str, str]
    body: dict[str, Any]
    #: how the node sends the fields [help.apsis.com 6231542]: a JSON body, a form body, or URL parameters
    body_format: str = "json"
    created_at: str = field(default_factory=_now_iso)
    status: str = "pending"  # pending | delivered | dead_letter
    attempts: int = 0
    next_at: float = 0.0
    last_status: int | None = None
    last_error: str | None = None
    finished_at: str | None = None

    def view(self) -> dict[str, Any]:
        """Header values and the URL's `token` parameter are left out: they hold the receiver's token."""
        return {
            "id": self.id,
            "url": _without_token(self.url),
            "method": self.method,
            "body_format": self.body_format,
            "header_names": sorted(self.headers),
            "event": self.body["event"],
            "body": self.body,
            "status": self.status,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


#: "contract": a JSON body in the event shape contracts/apsis-one.md §8 writes down (the profile as a nested
#: object, an event id, the section), which a Webhook node may be set up to send instead of our flat fields
WEBHOOK_BODY_FORMATS = ("json", "form", "query", "contract")


def _contract_body(flat: dict[str, Any], section: str) -> dict[str, Any]:
    """The webhook body in the shape of contracts/apsis-one.md §8: the profile nested, its key as `crm_id`."""
    profile = {"crm_id": flat["profile_key"], "email": flat["email"], "mobile": flat["mobile"]}
    return {
        "event_id": str(uuid.uuid4()),
        "event": flat["event"],
        "occurred_at": flat["occurred_at"],
        "section_discriminator": section,
        "profile": profile,
        "topic_discriminator": flat["topic_discriminator"],
        "channel_discriminator": flat["channel_discriminator"],
    }


def _without_token(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _with_params(url: str, fields: dict[str, Any]) -> str:
    """`url` with the fields appended as URL parameters (None values left out, as an empty node field)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, str(v)) for k, v in fields.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


class ApsisSimulator(SimServer):
    """APSIS One over real HTTP on loopback. See the module docstring and contracts/apsis-one.md."""

    name = "apsis"

    #: documented limits [D]; instance attributes so a benchmark can model another account
    account_rate = 100.0
    profile_key_rate = 10.0
    token_requests_per_minute = 10
    import_requests_per_minute = 10
    max_pending_imports = 3
    max_body_bytes = 100 * 1024
    max_upload_bytes = 50 * 1024 * 1024
    import_url_ttl = 3600.0  # [A] seconds the pre-signed upload URL stays valid
    #: the import's consent layout, as APSIS's own Magento module writes it [D]: one column per topic, headed
    #: by the topic discriminator, a cell of 1 applies the mapping's (fixed) type; any other header is refused
    import_consent_header_is_topic = True
    #: [A] what a consent cell of 0 does: "nothing" (like an empty cell) or "reject" (the row fails)
    import_zero_cell = "nothing"
    #: automation webhook delivery [A]: attempts, first backoff (doubles each time), per-call timeout
    webhook_attempts = 5
    webhook_backoff = 0.05
    webhook_timeout = 2.0

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_id: str = "apsis-test-client",
        client_secret: str = "apsis-test-secret",  # an obviously fake test credential
        token_ttl: float = 86400,
        expired_token_status: int = 401,
        retry_after: bool = True,
        consent_noop_status: int = 409,
        rate_limits: bool = True,
        import_delay_ms: int = 50,
        definitions: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host, port)
        self.clock = clock  # epoch seconds for tokens and upload URLs: a test moves it instead of sleeping
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.expired_token_status = expired_token_status  # [D] 401 and 403 both seen for an expired token
        self.retry_after = retry_after  # [A] whether 429 carries Retry-After
        self.consent_noop_status = consent_noop_status  # [D] 409 (reference) or 200 (help article)
        self.rate_limits = rate_limits
        self.import_delay_ms = import_delay_ms
        self._signing_key = secrets.token_bytes(32)
        self._definitions = Definitions(definitions or json.loads(FIXTURE.read_text()))
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self._webhook: dict[str, Any] | None = None
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._sender: threading.Thread | None = None
        self._clear_state()
        self._register_product_routes()
        self._register_control_routes()
        self.profile_exports = ProfileExports(self)  # POST /audience/profiles/exports and its poll URL

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> ApsisSimulator:
        super().start()
        with self._lock:
            self._stopping = False
        self._sender = threading.Thread(target=self._deliver_forever, name="apsis-sim-webhooks", daemon=True)
        self._sender.start()
        return self

    def stop_webhooks(self) -> None:
        """Send no more webhooks; the API goes on answering. A local stack's stop calls it first, so that no
        opt-out reaches its front once AWS is going down (a delivery under way ends first)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._sender is not None:
            self._sender.join(timeout=self.webhook_timeout + 1)
            self._sender = None

    def stop(self) -> None:
        with self._wake:
            timers = [job.timer for job in self._imports.values() if job.timer]
        self.stop_webhooks()
        for timer in timers:
            timer.cancel()
        super().stop()

    def __enter__(self) -> ApsisSimulator:
        return self.start()

    def reset(self) -> None:
        with self._lock:
            for job in self._imports.values():
                if job.timer:
                    job.timer.cancel()
            self._clear_state()
            self.profile_exports.clear()
            self._wake.notify_all()
        super().reset()

    def _clear_state(self) -> None:
        self._profiles: dict[tuple[str, str], Profile] = {}
        self._imports: dict[str, ImportJob] = {}
        self._deliveries: list[Delivery] = []
        self._account_bucket = TokenBucket(self.account_rate)
        self._per_second: Counter[int] = Counter()  # epoch second -> authenticated requests on the account
        self._refused = 0  # requests answered 429 by the account or profile-key limit
        self._key_buckets: dict[tuple[str, str], TokenBucket] = {}
        self._token_window = SlidingWindow(self.token_requests_per_minute, 60.0)
        self._import_window = SlidingWindow(self.import_requests_per_minute, 60.0)

    # ---- in-process API (tests, local stack) -----------------------------------------------------------
    def profiles(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.view() for p in self._profiles.values()]

    def imports(self) -> list[dict[str, Any]]:
        """Every import since the last reset, oldest first: its spec, the CSV uploaded (text) and its status."""
        with self._lock:
            return [
                {
                    "import_id": job.import_id,
                    "spec": copy.deepcopy(job.spec),
                    "csv": job.file.decode("utf-8-sig") if job.file is not None else None,
                    "status": job.status,
                    "created_at": job.created_at,
                    "ended_at": job.ended_at,
                }
                for job in self._imports.values()
            ]

    def get_profile(self, keyspace: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            profile = self._profiles.get((keyspace, str(key)))
            return profile.view() if profile else None

    def rate(self) -> dict[str, Any]:
        """What the account's limit saw: requests per calendar second (busiest first) and how many got 429."""
        with self._lock:
            seconds = dict(self._per_second)
            refused = self._refused
        return {"max_per_second": max(seconds.values(), default=0), "per_second": seconds, "refused": refused}

    def set_definitions(self, definitions: dict[str, Any]) -> None:
        parsed = Definitions(definitions)
        with self._lock:
            self._definitions = parsed

    def definitions(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._definitions.raw)

    def configure_webhook(
        self,
        url: str | None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        body_format: str = "json",
    ) -> None:
        """Point the simulated MA flow's Webhook node at `url` (None switches it off). The node sends what the
        user sets up: any method, URL parameters (a `token` one included), headers, and the fields as a JSON body,
        a form body, or URL parameters (`body_format` json | form | query), or the contract's JSON event shape
        (`contract`: contracts/apsis-one.md §8)."""
        if body_format not in WEBHOOK_BODY_FORMATS:
            raise Problem(400, f"body_format must be one of {', '.join(WEBHOOK_BODY_FORMATS)}")
        with self._lock:
            self._webhook = (
                None
                if url is None
                else {"url": url, "headers": dict(headers or {}), "method": method.upper(), "body_format": body_format}
            )

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d.view() for d in self._deliveries]

    def flush_webhooks(self, timeout: float = 5.0) -> bool:
        """Wait until no delivery is pending; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while any(d.status == "pending" for d in self._deliveries):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(timeout=remaining)
            return True

    def revoke_tokens(self) -> None:
        """Forget every issued token, as if they had all expired: the next call gets 401 (or 403)."""
        with self._lock:
            self._tokens.clear()

    def unsubscribe(
        self,
        profile_key: str,
        topic: str | None,
        channel: str = "email",
        kind: str = "unsubscribe",
        keyspace: str = DEFAULT_KEYSPACE,
        section: str | None = None,
    ) -> dict[str, Any]:
        """An opt-out made by the person (unsubscribe link, abuse report), then the automation webhook.

        Returns the webhook body (also built when no webhook is configured). Raises Problem on bad input.
        """
        channel_disc = CHANNELS.get(channel, channel)
        if channel_disc not in CHANNEL_NAMES:
            raise Problem(400, f"channel must be one of {sorted(CHANNELS)}")
        if kind not in ("unsubscribe", "abuse") or (kind == "abuse" and channel_disc != CHANNELS["email"]):
            raise Problem(400, "kind must be 'unsubscribe', or 'abuse' on the email channel")
        with self._lock:
            defs = self._definitions
            section = section or defs.default_section
            section_defs = defs.section(section)
            profile = self._profiles.get((keyspace, str(profile_key)))
            if profile is None:
                raise Problem(404, f"profile {profile_key!r} does not exist in {keyspace}")
            if kind == "abuse":
                topics = [t for t in section_defs.topics if section_defs.topic_accepts(t, channel_disc)]
            elif topic in section_defs.topics and section_defs.topic_accepts(topic, channel_disc):
                topics = [topic]
            else:
                raise Problem(400, f"topic {topic!r} does not exist on channel {channel} in {section}")
            for each in topics:
                self._apply_consent(profile, section, each, channel_disc, "opt-out", "Unsubscribe", kind)
            attributes = profile.section_attributes(section)
            body = {
                "event": f"{CHANNEL_NAMES[channel_disc]}.{kind}",
                "profile_key": profile.key,
                "email": attributes.get(EMAIL_ATTRIBUTE),
                "mobile": attributes.get(MOBILE_ATTRIBUTE),
                "topic_discriminator": None if kind == "abuse" else topic,
                "channel_discriminator": channel_disc,
                "occurred_at": _now_iso(),
            }
            if self._webhook is not None and self._webhook["body_format"] == "contract":
                body = _contract_body(body, section)
            if self._webhook is not None:
                self._deliveries.append(Delivery(id=str(uuid.uuid4()), body=body, **copy.deepcopy(self._webhook)))
                self._wake.notify_all()
            return body

    # ---- errors and request plumbing --------------------------------------------------------------------
    def error_response(self, status: int, title: str, detail: str) -> Response:
        return json_response(
            {"title": title, "status": status, "detail": detail}, status, content_type="application/problem+json"
        )

    def _problem(self, problem: Problem) -> Response:
        response = self.error_response(problem.status, TITLES.get(problem.status, "Error"), problem.detail)
        response.headers.update(problem.headers)
        return response

    def _too_many(self, detail: str, wait: float = 1.0) -> Problem:
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if self.retry_after else {}
        return Problem(429, detail, headers=headers)

    def _guard(self, handler: Callable[..., Response], *, auth: bool = True) -> Callable[..., Response]:
        """Wrap a product route: body framing, bearer token, account and per-profile-key limits, body size."""

        def guarded(request: Request, **params: str) -> Response:
            try:
                if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
                    raise Problem(411, "send Content-Length; chunked request bodies are not accepted")  # [A]
                if auth:
                    self._authenticate(request)
                    self._take_budget(params.get("keyspace"), params.get("key"))
                    if (request.content_length or 0) > self.max_body_bytes:
                        raise Problem(413, f"request body is larger than {self.max_body_bytes} bytes")
                return handler(request, **params)
            except Problem as problem:
                return self._problem(problem)

        return guarded

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise Problem(401, "missing bearer token")
        with self._lock:
            expires_at = self._tokens.get(header[len("Bearer ") :])
        if expires_at is None or expires_at <= self.clock():
            raise Problem(self.expired_token_status, "access token is invalid or expired")

    def _take_budget(self, keyspace: str | None, key: str | None, *, account: bool = True) -> None:
        if account:
            with self._lock:
                self._per_second[int(time.time())] += 1  # every request of the account, answered or refused
        if not self.rate_limits:
            return
        with self._lock:
            if account and not self._account_bucket.take():
                self._refused += 1
                raise self._too_many(f"more than {self.account_rate:g} requests per second on this account")
            if key is not None:
                bucket = self._key_buckets.setdefault((keyspace or "", key), TokenBucket(self.profile_key_rate))
                if not bucket.take():
                    self._refused += 1
                    raise self._too_many(f"more than {self.profile_key_rate:g} requests per second on one profile key")

    @staticmethod
    def _json(request: Request, *, merge_patch: bool = False) -> dict[str, Any]:
        mimetype = request.mimetype
        if merge_patch and mimetype != "application/merge-patch+json":
            raise Problem(415, "use Content-Type: application/merge-patch+json")  # [A] strict, as PATCH docs say
        if not merge_patch and mimetype != "application/json":
            raise Problem(415 if mimetype else 400, "use Content-Type: application/json")
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError as exc:
            raise Problem(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Problem(400, "body must be a JSON object")
        return body

    def _profile(self, keyspace: str, key: str) -> Profile:
        profile = self._profiles.get((keyspace, key))
        if profile is None:
            raise Problem(404, f"profile does not exist in keyspace {keyspace}")  # [A] status for a missing profile
        return profile

    def _create(self, keyspace: str, key: str, section: str) -> Profile:
        profile = Profile(keyspace=keyspace, key=key)
        self._profiles[(keyspace, key)] = profile
        mapped = KEYSPACE_ATTRIBUTES.get(keyspace)
        if mapped and mapped in self._definitions.section(section).attributes:
            profile.section_attributes(section)[mapped] = key
        return profile

    # ---- routes -----------------------------------------------------------------------------------------
    def _register_product_routes(self) -> None:
        profile = "/audience/keyspaces/<keyspace>/profiles/<key>"
        profile_v2 = "/v2" + profile
        routes: list[tuple[str, Callable[..., Response], str]] = [
            ("/audience/sections", self._list_sections, "GET"),
            ("/audience/keyspaces", self._list_keyspaces, "GET"),
            ("/audience/sections/<section>/attributes", self._list_attributes, "GET"),
            ("/v2/audience/sections/<section>/topics", self._list_topics, "GET"),
            ("/audience/sections/<section>/tags", self._list_tags, "GET"),  # [A] path
            ("/audience/keyspaces/<keyspace>/sections/<section>/profiles", self._create_profile, "POST"),
            (profile_v2 + "/sections/<section>/attributes", self._patch_attributes_v2, "PATCH"),
            (profile + "/sections/<section>/attributes", self._patch_attributes_v1, "PATCH"),
            (profile, self._delete_profile, "DELETE"),
            (profile + "/sections/<section>/tags", self._patch_tags, "PATCH"),  # [A] path and shape
            (profile_v2 + "/sections/<section>/consents", self._post_consent, "POST"),
            (profile_v2 + "/sections/<section>/consents", self._get_consents, "GET"),
            ("/v2/audience/sections/<section>/imports", self._create_import, "POST"),
            ("/audience/sections/<section>/imports/<import_id>", self._get_import, "GET"),
        ]
        self.route("/oauth/token", self._guard(self._token, auth=False), methods=["POST"])
        for rule, handler, method in routes:
            self.route(rule, self._guard(handler), methods=[method])
        # stands in for the S3 pre-signed POST: no bearer token and no APSIS rate limits, but counted
        self.route("/_upload/<import_id>", self._guard(self._upload, auth=False), methods=["POST"])

    def _register_control_routes(self) -> None:
        for rule, handler, method in [
            ("/_sim/profiles", self._ctl_profiles, "GET"),
            ("/_sim/profiles/<keyspace>/<key>", self._ctl_profile, "GET"),
            ("/_sim/unsubscribe", self._ctl_unsubscribe, "POST"),
            ("/_sim/webhooks", self._ctl_webhooks, "POST"),
            ("/_sim/webhooks/deliveries", self._ctl_deliveries, "GET"),
            ("/_sim/definitions", self._ctl_set_definitions, "POST"),
            ("/_sim/definitions", self._ctl_get_definitions, "GET"),
            ("/_sim/tokens/revoke", self._ctl_revoke_tokens, "POST"),
            ("/_sim/rate", self._ctl_rate, "GET"),
        ]:
            self.route(rule, self._control(handler), methods=[method], control=True)

    def _control(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        def wrapped(request: Request, **params: str) -> Response:
            try:
                return handler(request, **params)
            except Problem as problem:
                return self._problem(problem)

        return wrapped

    # ---- token --------------------------------------------------------------------------------------------
    def _token(self, request: Request) -> Response:
        if self.rate_limits:
            with self._lock:
                wait = self._token_window.take()
            if wait is not None:
                raise self._too_many(f"more than {self.token_requests_per_minute} token requests per minute", wait)
        if request.mimetype != "application/json":
            raise Problem(400, "the token request takes a JSON body, not a form")  # [A] status
        body = self._json(request)
        if body.get("grant_type") != "client_credentials":
            raise Problem(400, "grant_type must be client_credentials")
        good_id = hmac.compare_digest(str(body.get("client_id", "")), self.client_id)
        good_secret = hmac.compare_digest(str(body.get("client_secret", "")), self.client_secret)
        if not (good_id and good_secret):
            raise Problem(401, "invalid client credentials")
        token = self._issue_token()
        return json_response({"access_token": token, "expires_in": int(self.token_ttl), "token_type": "Bearer"})

    def _issue_token(self) -> str:
        """A JWT-shaped token whose `exp` claim is what clients should read (expires_in is deprecated)."""
        issued = self.clock()
        expires_at = issued + self.token_ttl
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": self.client_id, "iat": int(issued), "exp": int(expires_at), "jti": str(uuid.uuid4())}
        payload = _b64url(json.dumps(claims).encode())
        signature = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{_b64url(signature)}"
        with self._lock:
            self._tokens[token] = expires_at
        return token

    # ---- definitions ------------------------------------------------------------------------------------
    def _list_sections(self, request: Request) -> Response:
        with self._lock:
            return json_response({"items": [s.item for s in self._definitions.sections.values()]})

    def _list_keyspaces(self, request: Request) -> Response:
        with self._lock:
            return json_response({"items": list(self._definitions.keyspaces.values())})

    def _list_attributes(self, request: Request, section: str) -> Response:
        with self._lock:
            return json_response({"items": list(self._definitions.section(section).attributes.values())})

    def _list_topics(self, request: Request, section: str) -> Response:
        with self._lock:
            return json_response({"items": list(self._definitions.section(section).topics.values())})

    def _list_tags(self, request: Request, section: str) -> Response:
        with self._lock:
            return json_response({"items": list(self._definitions.section(section).tags.values())})

    # ---- profiles and attributes --------------------------------------------------------------------------
    def _create_profile(self, request: Request, keyspace: str, section: str) -> Response:
        body = self._json(request)
        key = body.get("profile_key")
        if not isinstance(key, str) or not key:
            raise Problem(400, "profile_key must be a non-empty string")
        self._take_budget(keyspace, key, account=False)  # the key is in the body, so the guard could not
        with self._lock:
            self._definitions.keyspace(keyspace)
            self._definitions.section(section)
            if (keyspace, key) in self._profiles:
                raise Problem(409, "a profile with this key already exists in the keyspace")
            self._create(keyspace, key, section)
        return json_response({"profile_key": key}, 201)

    def _patch_attributes_v2(self, request: Request, keyspace: str, key: str, section: str) -> Response:
        body = self._json(request, merge_patch=True)
        with self._lock:
            defs = self._definitions.section(section)
            self._definitions.keyspace(keyspace)
            unknown = sorted(set(body) - set(defs.attributes))
            if unknown:
                raise Problem(400, f"unknown attributes in section {section}: {unknown}")  # [A] 400 (not 403)
            self._check_values(body)
            self._merge(self._profile(keyspace, key).section_attributes(section), body)
        return Response(status=204)

    def _patch_attributes_v1(self, request: Request, keyspace: str, key: str, section: str) -> Response:
        body = self._json(request, merge_patch=True)
        with self._lock:
            defs = self._definitions.section(section)
            self._definitions.keyspace(keyspace)
            patch: dict[str, Any] = {}
            for version_id, value in body.items():
                attribute, deprecated = defs.versions.get(version_id, (None, False))
                if attribute is None or deprecated:
                    raise Problem(400, f"{version_id!r} is not a live attribute version id in section {section}")
                patch[attribute] = value
            self._check_values(patch)
            profile = self._profiles.get((keyspace, key)) or self._create(keyspace, key, section)
            self._merge(profile.section_attributes(section), patch)
        return Response(status=204)

    @staticmethod
    def _check_values(patch: dict[str, Any]) -> None:
        for attribute, value in patch.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise Problem(400, f"attribute {attribute} takes a scalar value")

    @staticmethod
    def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
        for attribute, value in patch.items():
            if value is None:
                target.pop(attribute, None)
            else:
                target[attribute] = value

    def _delete_profile(self, request: Request, keyspace: str, key: str) -> Response:
        with self._lock:
            self._definitions.keyspace(keyspace)  # an unknown keyspace answers 404 before any profile is looked up
            self._profile(keyspace, key)
            del self._profiles[(keyspace, key)]
        return Response(status=204)

    def _patch_tags(self, request: Request, keyspace: str, key: str, section: str) -> Response:
        body = self._json(request, merge_patch=True)
        with self._lock:
            defs = self._definitions.section(section)
            self._definitions.keyspace(keyspace)
            unknown = sorted(set(body) - set(defs.tags))
            if unknown:
                raise Problem(400, f"unknown tags in section {section}: {unknown}")
            if any(not isinstance(v, bool) for v in body.values()):
                raise Problem(400, "tag values must be true (add) or false (remove)")
            tags = self._profile(keyspace, key).section_tags(section)
            for tag, present in body.items():
                (tags.add if present else tags.discard)(tag)
        return Response(status=204)

    # ---- consents ---------------------------------------------------------------------------------------
    def _post_consent(self, request: Request, keyspace: str, key: str, section: str) -> Response:
        body = self._json(request)
        with self._lock:
            defs = self._definitions.section(section)
            if not self._definitions.keyspace(keyspace).get("manage_subscriptions"):
                raise Problem(403, f"keyspace {keyspace} cannot manage subscriptions")
            topic, channel = body.get("topic_discriminator"), body.get("channel_discriminator")
            if topic not in defs.topics:
                raise Problem(400, f"topic {topic!r} does not exist in section {section}")
            if channel not in CHANNEL_NAMES or not defs.topic_accepts(topic, channel):
                raise Problem(400, f"channel {channel!r} is not available on topic {topic}")
            if body.get("type") not in CONSENT_TYPES:
                raise Problem(400, f"type must be one of {list(CONSENT_TYPES)}")
            profile = self._profile(keyspace, key)
            source = body.get("source") or "One API"
            outcome = self._apply_consent(profile, section, topic, channel, body["type"], source, body.get("reason"))
        if outcome == "created":
            return Response(status=201)
        if outcome == "updated":
            return Response(status=204)
        if self.consent_noop_status == 200:
            return Response(status=200)
        raise Problem(409, f"profile already has {body['type']} on {topic}")

    @staticmethod
    def _apply_consent(
        profile: Profile, section: str, topic: str, channel: str, kind: str, source: str, reason: str | None
    ) -> str:
        """Set one consent; says whether it was created, changed or already so. Never fires the webhook."""
        records = profile.section_consents(section)
        current = records.get((topic, channel))
        if current is not None and current["type"] == kind:
            return "unchanged"
        records[(topic, channel)] = {
            "topic_discriminator": topic,
            "channel_discriminator": channel,
            "type": kind,
            "source": source,
            "reason": reason,
            "modified_at": _now_iso(),
        }
        return "created" if current is None else "updated"

    def _get_consents(self, request: Request, keyspace: str, key: str, section: str) -> Response:
        wanted = set(request.args.getlist("consent_types"))
        with self._lock:
            self._definitions.section(section)
            self._definitions.keyspace(keyspace)
            records = self._profile(keyspace, key).section_consents(section).values()
            items = [dict(r) for r in records if not wanted or r["type"] in wanted]
        return json_response({"items": items})

    # ---- bulk import ------------------------------------------------------------------------------------
    def _create_import(self, request: Request, section: str) -> Response:
        spec = self._json(request)
        with self._lock:
            plan = ImportPlan.compile(
                spec,
                self._definitions,
                section,
                topic_headers=self.import_consent_header_is_topic,
                zero_cell=self.import_zero_cell,
            )
            self._expire_imports()
            pending = sum(1 for job in self._imports.values() if job.status in PENDING_IMPORT)
            if pending >= self.max_pending_imports:
                raise self._too_many(f"{pending} imports are already pending on this account")
            wait = self._import_window.take() if self.rate_limits else None
            if wait is not None:
                raise self._too_many(f"more than {self.import_requests_per_minute} import requests per minute", wait)
            job = ImportJob(
                import_id=str(uuid.uuid4()),
                section=section,
                plan=plan,
                policy=secrets.token_urlsafe(24),
                expires_at=self.clock() + self.import_url_ttl,
                spec=copy.deepcopy(spec),
                created_at=self.clock(),
            )
            self._imports[job.import_id] = job
        expires = datetime.fromtimestamp(job.expires_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return json_response(
            {
                "import_id": job.import_id,
                "file_upload_url": f"{self.url}/_upload/{job.import_id}",
                "file_upload_body": {"key": f"imports/{job.import_id}.csv", "policy": job.policy},
                "file_upload_url_expires_at": expires,
            },
            201,
        )

    def _expire_imports(self) -> None:
        """[A] An import still waiting for its file after the URL expired fails, freeing its pending slot."""
        now = self.clock()
        for job in self._imports.values():
            if job.status == "waiting_for_file" and now > job.expires_at:
                job.status = "error"
                job.report = _report(errors=[{"row": 0, "message": "file was not uploaded before the URL expired"}])

    def _get_import(self, request: Request, section: str, import_id: str) -> Response:
        with self._lock:
            self._expire_imports()
            job = self._imports.get(import_id)
            if job is None or job.section != section:
                raise Problem(404, f"import {import_id} does not exist in section {section}")
            return json_response(job.result())

    def _upload(self, request: Request, import_id: str) -> Response:
        if (request.content_length or 0) > self.max_upload_bytes:
            raise Problem(413, f"the file is larger than {self.max_upload_bytes} bytes; split it")  # [A] code
        with self._lock:
            self._expire_imports()
            job = self._imports.get(import_id)
            if job is None or request.form.get("policy") != job.policy:
                raise Problem(403, "unknown upload URL or wrong policy field")  # S3 answers 403
            if job.status != "waiting_for_file":
                raise Problem(403, f"import is {job.status}; the upload URL is no longer valid")
            upload = request.files.get("file")
            if upload is None:
                raise Problem(400, "multipart field 'file' is missing")
            data = upload.read()
            job.file = data
            job.status = "queued"
            job.timer = threading.Timer(self.import_delay_ms / 1000, self._run_import, args=(job, data))
            job.timer.daemon = True
            job.timer.start()
        return Response(status=204)

    def _run_import(self, job: ImportJob, data: bytes) -> None:
        with self._lock:
            if self._imports.get(job.import_id) is not job:
                return  # reset meanwhile
            job.status = "in_progress"
            try:
                rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
                job.report = job.plan.apply(rows, self)
                job.status = "completed"
            except (UnicodeDecodeError, csv.Error, ValueError) as exc:
                job.report = _report(errors=[{"row": 0, "message": f"file rejected: {exc}"}])
                job.status = "error"
            job.ended_at = self.clock()

    # ---- automation webhook delivery ---------------------------------------------------------------------
    def _deliver_forever(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
                delivery, wait = self._next_delivery()
                if delivery is None:
                    self._wake.wait(timeout=wait)
                    continue
            self._attempt(delivery)

    def _next_delivery(self) -> tuple[Delivery | None, float]:
        now = time.monotonic()
        pending = [d for d in self._deliveries if d.status == "pending"]
        due = [d for d in pending if d.next_at <= now]
        if due:
            return due[0], 0.0
        return None, min((d.next_at - now for d in pending), default=1.0)

    def _attempt(self, delivery: Delivery) -> None:
        status: int | None = None
        error: str | None = None
        url, data, content_type = delivery.url, json.dumps(delivery.body).encode(), "application/json"
        if delivery.body_format == "form":
            fields = {k: str(v) for k, v in delivery.body.items() if v is not None}
            data, content_type = urlencode(fields).encode(), "application/x-www-form-urlencoded"
        elif delivery.body_format == "query":
            url, data, content_type = _with_params(delivery.url, delivery.body), None, None
        try:
            response = requests.request(
                delivery.method,
                url,
                data=data,
                headers={**delivery.headers, **({"Content-Type": content_type} if content_type else {})},
                timeout=self.webhook_timeout,
            )
            status = response.status_code
        except requests.RequestException as exc:
            error = type(exc).__name__
        with self._wake:
            delivery.attempts += 1
            delivery.last_status, delivery.last_error = status, error
            retryable = status is None or status == 429 or status >= 500
            if status is not None and 200 <= status < 300:
                delivery.status = "delivered"
            elif not retryable or delivery.attempts >= self.webhook_attempts:
                delivery.status = "dead_letter"
            else:
                delivery.next_at = time.monotonic() + self.webhook_backoff * 2 ** (delivery.attempts - 1)
            if delivery.status != "pending":
                delivery.finished_at = _now_iso()
            self._wake.notify_all()

    # ---- control routes ---------------------------------------------------------------------------------
    def _ctl_profiles(self, request: Request) -> Response:
        return json_response({"profiles": self.profiles()})

    def _ctl_profile(self, request: Request, keyspace: str, key: str) -> Response:
        profile = self.get_profile(keyspace, key)
        if profile is None:
            raise Problem(404, f"no profile {key!r} in {keyspace}")
        return json_response(profile)

    def _ctl_unsubscribe(self, request: Request) -> Response:
        body = request.get_json(force=True, silent=True) or {}
        if not body.get("profile_key"):
            raise Problem(400, "profile_key is required")
        event = self.unsubscribe(
            str(body["profile_key"]),
            body.get("topic") or body.get("topic_discriminator"),
            channel=body.get("channel", "email"),
            kind=body.get("kind", "unsubscribe"),
            keyspace=body.get("keyspace", DEFAULT_KEYSPACE),
            section=body.get("section"),
        )
        return json_response({"event": event, "webhook": "queued" if self._webhook else "not_configured"})

    def _ctl_webhooks(self, request: Request) -> Response:
        body = request.get_json(force=True, silent=True) or {}
        if "url" not in body:
            raise Problem(400, "url is required (null switches the webhook off)")
        headers = body.get("headers") or {}
        if not isinstance(headers, dict):
            raise Problem(400, "headers must be an object")
        self.configure_webhook(body["url"], headers, body.get("method", "POST"), body.get("body_format", "json"))
        url = _without_token(body["url"]) if body["url"] else None
        return json_response(
            {"url": url, "header_names": sorted(headers), "body_format": body.get("body_format", "json")}
        )

    def _ctl_deliveries(self, request: Request) -> Response:
        return json_response({"deliveries": self.deliveries()})

    def _ctl_set_definitions(self, request: Request) -> Response:
        try:
            self.set_definitions(request.get_json(force=True, silent=True))
        except (ValueError, KeyError, TypeError) as exc:
            raise Problem(400, f"bad definitions: {exc}") from None
        return json_response({"sections": len(self._definitions.sections)})

    def _ctl_get_definitions(self, request: Request) -> Response:
        return json_response(self.definitions())

    def _ctl_rate(self, request: Request) -> Response:
        out = self.rate()
        return json_response({**out, "per_second": {str(k): v for k, v in sorted(out["per_second"].items())}})

    def _ctl_revoke_tokens(self, request: Request) -> Response:
        self.revoke_tokens()
        return json_response({"revoked": True})


def _report(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"rows": 0, "created": 0, "updated": 0, "failed": 0, "errors": []}
    report.update(overrides)
    return report


def _cell(row: dict[str, Any], column: str) -> str:
    return (row.get(column) or "").strip()


@dataclass
class ImportPlan:
    """An import spec checked against the definitions, ready to apply to CSV rows.

    Consent layout [D: APSIS's Magento module]: one column per topic, headed by the topic discriminator; the
    consent type is fixed per mapping, so opt-ins and opt-outs go in separate imports; a cell of `1` applies
    the mapping's type, an empty cell nothing. Any other consent cell fails its row [A], except `0`, which
    does nothing unless `import_zero_cell` is "reject" [A]. A spec whose consent column is not headed by its
    topic, or that maps one column to both types, is refused with 400 [A].
    Other row semantics [A] (the docs do not say): an empty cell leaves an attribute unchanged; a tag cell of
    `true/1/yes` adds the tag, `false/0/no` removes it, empty leaves it.
    """

    section: str
    keyspace: str
    key_column: str
    update_existing: bool
    clear_existing: bool
    attributes: list[tuple[str, str]]  # (column, attribute discriminator)
    consents: list[tuple[str, list[dict[str, Any]]]]  # (address column, consent mappings)
    tags: list[tuple[str, str]]  # (column, tag)
    zero_cell: str = "nothing"

    def bad_consent_cell(self, row: dict[str, Any]) -> str | None:
        """Why a row's consent cells are not APSIS's layout (1 or empty), or None when they are."""
        allowed = {"", "1"} | ({"0"} if self.zero_cell == "nothing" else set())
        for _, consents in self.consents:
            for consent in consents:
                value = _cell(row, consent["field_selector"])
                if value not in allowed:
                    return f"consent cell {value[:20]!r} in column {consent['field_selector']}: allowed 1 or empty"
        return None

    @classmethod
    def compile(
        cls,
        spec: dict[str, Any],
        definitions: Definitions,
        section: str,
        *,
        topic_headers: bool = True,
        zero_cell: str = "nothing",
    ) -> ImportPlan:
        defs = definitions.section(section)
        mapping = spec.get("keyspace_mapping") or {}
        keyspace = mapping.get("keyspace_discriminator")
        if keyspace not in definitions.keyspaces or not mapping.get("field_selector"):
            raise Problem(400, "keyspace_mapping needs a known keyspace_discriminator and a field_selector")
        if not definitions.keyspaces[keyspace].get("manage_subscriptions"):
            raise Problem(403, f"keyspace {keyspace} cannot manage subscriptions, so it cannot import")
        options = spec.get("options") or {}
        consents = [cls._consent_group(g, defs, topic_headers) for g in spec.get("consent_mappings") or []]
        types: dict[str, set[str]] = {}
        for _, group in consents:
            for consent in group:
                types.setdefault(consent["field_selector"], set()).add(consent["type"])
        mixed = sorted(column for column, kinds in types.items() if len(kinds) > 1)
        if mixed:
            raise Problem(400, f"columns {mixed} are mapped as opt-in and opt-out: send each type in its own import")
        return cls(
            section=section,
            keyspace=keyspace,
            key_column=mapping["field_selector"],
            update_existing=bool(options.get("update_existing_profiles", True)),
            clear_existing=bool(options.get("clear_existing_attributes", False)),
            attributes=[cls._attribute(m, defs) for m in spec.get("attribute_mappings") or []],
            consents=consents,
            zero_cell=zero_cell,
            tags=[cls._tag(m, defs) for m in spec.get("tag_mappings") or []],  # [A] field name
        )

    @staticmethod
    def _attribute(mapping: dict[str, Any], defs: SectionDefinitions) -> tuple[str, str]:
        """[A] accepts attribute_discriminator as well as the documented attribute_version_id."""
        version = mapping.get("attribute_version_id")
        attribute = mapping.get("attribute_discriminator")
        if version is not None:
            attribute, deprecated = defs.versions.get(version, (None, False))
            if deprecated:
                attribute = None
        if attribute not in defs.attributes or not mapping.get("field_selector"):
            raise Problem(400, f"attribute mapping {mapping} names no live attribute of the section")
        return mapping["field_selector"], attribute

    @staticmethod
    def _consent_group(
        group: dict[str, Any], defs: SectionDefinitions, topic_headers: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        if not group.get("address_field_selector"):
            raise Problem(400, "consent_mappings entries need an address_field_selector")
        consents = []
        for consent in group.get("consents") or []:
            topic = consent.get("topic_discriminator")
            channel = consent.get("channel_discriminator") or CHANNELS["email"]
            if topic not in defs.topics or not defs.topic_accepts(topic, channel) or not consent.get("field_selector"):
                raise Problem(400, f"consent mapping {consent} names no topic/channel of the section")
            if consent.get("type") not in CONSENT_TYPES:
                raise Problem(400, f"consent mapping type must be one of {list(CONSENT_TYPES)}")
            if topic_headers and consent["field_selector"] != topic:
                raise Problem(
                    400,
                    f"consent column {consent['field_selector']!r} must be headed by its topic discriminator {topic!r}",
                )
            consents.append({**consent, "channel_discriminator": channel})
        return group["address_field_selector"], consents

    @staticmethod
    def _tag(mapping: dict[str, Any], defs: SectionDefinitions) -> tuple[str, str]:
        tag = mapping.get("tag_discriminator")
        if tag not in defs.tags or not mapping.get("field_selector"):
            raise Problem(400, f"tag mapping {mapping} names no tag of the section")
        return mapping["field_selector"], tag

    def columns(self) -> set[str]:
        names = {self.key_column, *(c for c, _ in self.attributes), *(c for c, _ in self.tags)}
        for address, consents in self.consents:
            names.add(address)
            names.update(c["field_selector"] for c in consents)
        return names

    def apply(self, rows: list[dict[str, Any]], sim: ApsisSimulator) -> dict[str, Any]:
        """Runs under the simulator lock. Imports never fire the automation webhook [D]."""
        if rows:
            missing = sorted(self.columns() - set(rows[0]))
            if missing:
                raise ValueError(f"columns missing from the file: {missing}")
        report = _report(rows=len(rows))
        for number, row in enumerate(rows, start=1):
            key = _cell(row, self.key_column)
            if not key:
                report["failed"] += 1
                report["errors"].append({"row": number, "message": f"empty profile key in {self.key_column}"})
                continue
            bad = self.bad_consent_cell(row)
            if bad:
                report["failed"] += 1
                report["errors"].append({"row": number, "message": bad})
                continue
            profile = sim._profiles.get((self.keyspace, key))
            if profile is not None and not self.update_existing:
                continue
            if profile is None:
                profile = sim._create(self.keyspace, key, self.section)
                report["created"] += 1
            else:
                report["updated"] += 1
            self._apply_row(profile, row, number, report)
        return report

    def _apply_row(self, profile: Profile, row: dict[str, Any], number: int, report: dict[str, Any]) -> None:
        attributes = profile.section_attributes(self.section)
        if self.clear_existing:
            keep = KEYSPACE_ATTRIBUTES.get(self.keyspace)
            for attribute in [a for a in attributes if a != keep]:
                del attributes[attribute]
        for column, attribute in self.attributes:
            if _cell(row, column):
                attributes[attribute] = _cell(row, column)
        tags = profile.section_tags(self.section)
        for column, tag in self.tags:
            value = _cell(row, column).lower()
            if value in TRUTHY:
                tags.add(tag)
            elif value in FALSY:
                tags.discard(tag)
        for address_column, consents in self.consents:
            for consent in consents:
                self._apply_consent(profile, row, number, report, _cell(row, address_column), consent)

    def _apply_consent(
        self,
        profile: Profile,
        row: dict[str, Any],
        number: int,
        report: dict[str, Any],
        address: str,
        consent: dict[str, Any],
    ) -> None:
        if _cell(row, consent["field_selector"]) != "1":
            return  # empty (or 0, see `bad_consent_cell`): this row gives no consent on that topic
        kind = consent["type"]
        if not address:
            report["errors"].append({"row": number, "message": "consent skipped: the address column is empty"})
            return
        topic, channel = consent["topic_discriminator"], consent["channel_discriminator"]
        current = profile.section_consents(self.section).get((topic, channel))
        opted_out = current is not None and current["type"] == "opt-out"
        if kind == "opt-in" and opted_out and not consent.get("resubscribe_if_opted_out", False):
            return
        ApsisSimulator._apply_consent(profile, self.section, topic, channel, kind, "Import", "import")
