"""Efficy Enterprise simulator: JSON-RPC at /crm/json, the 12.1 connector REST API under /v1, outgoing webhooks.

Shapes follow the "Recommended contract for a simulator" in the shared contracts (efficy.md). Whatever the public
sources do not settle is marked [A] (assumed) where it is decided, so it can be checked against a real instance
and changed in one place. State lives in memory behind the base class's lock; the webhook outbox has its own
lock and thread, so a slow receiver never blocks the API.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from werkzeug.wrappers import Request, Response

from efficy_sync_tools.sims.base import SimServer, json_response

CONT_TABLE = 11000
EMPTY_DATE = "1899-12-30T00:00:00"  # Efficy's zero date, what an empty date field reads as
PROFILE_DETAIL = "prof"  # [A] detail name of CRM Profiles on a contact (compared case-insensitively)
MAX_PAGE_SIZE = 500  # [A] largest REST page
SESSION_COOKIE = "EfficySession"

#: standard contact columns: name -> (type, label). Types are the connector schema's; values still travel as
#: strings, the way Efficy sends booleans and numbers.
STANDARD_FIELDS: dict[str, tuple[str, str]] = {
    "K_CONTACT": ("int", "Contact key"),
    "NAME": ("string", "Last name"),
    "FIRSTNAME": ("string", "First name"),
    "EMAIL1": ("string", "E-mail"),
    "MOBILE": ("string", "Mobile phone"),
    "LANGUAGE": ("string", "Language"),
    "OPENED": ("bool", "Active"),
    "ROBINSON": ("bool", "Robinson list (do not contact)"),
    "D_CHANGE": ("datetime", "Last changed"),
}
NEW_PERSON = {"NAME": "", "FIRSTNAME": "", "EMAIL1": "", "MOBILE": "", "LANGUAGE": "", "OPENED": "1", "ROBINSON": "0"}
DEFAULT_PROFILES = {12: "Newsletter", 13: "SMS offers", 14: "Events"}
READ_ONLY_FIELDS = frozenset({"K_CONTACT", "D_CHANGE"})

# [A] business error codes: Efficy's real codes for these cases are not published.
RECORD_NOT_FOUND = "RECORD_NOT_FOUND"
UNKNOWN_PROFILE = "UNKNOWN_PROFILE"
RELATION_NOT_FOUND = "RELATION_NOT_FOUND"
LINK_EXISTS = "LINK_EXISTS"
UNKNOWN_QUERY = "UNKNOWN_QUERY"
UNKNOWN_ENTITY = "UNKNOWN_ENTITY"
UNKNOWN_DETAIL = "UNKNOWN_DETAIL"
UNKNOWN_FUNCTION = "UNKNOWN_FUNCTION"
INVALID_REQUEST = "INVALID_REQUEST"
INVALID_JSON = "INVALID_JSON"


class RpcFault(Exception):
    """A business error: JSON-RPC answers it with HTTP 200 and an exception element in place of the context."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RestFault(Exception):
    """A connector REST error, answered with a real status code and `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# ---- values ---------------------------------------------------------------------------------------------------
def _format_ms(epoch_ms: int, zone: str | None = None) -> str:
    """D_CHANGE as Efficy writes it: naive, in UTC or (`zone`, an IANA name) the server's local time."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    if zone:
        from zoneinfo import ZoneInfo

        moment = moment.astimezone(ZoneInfo(zone))
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}"


def _value_type(raw: Any) -> str:
    if isinstance(raw, bool):
        return "bool"
    if isinstance(raw, int):
        return "int"
    if isinstance(raw, float):
        return "float"
    return "string"


def _as_efficy_value(name: str, raw: Any) -> str:
    """Efficy sends booleans as "1"/"0", numbers as strings and an empty date as the zero date."""
    if raw is None or raw == "":
        return EMPTY_DATE if name.startswith("D_") else ""
    if isinstance(raw, bool):
        return "1" if raw else "0"
    return str(raw)


def _as_key(raw: Any, what: str = "key") -> int:
    """Keys travel as numbers, sometimes floats (the JS clients send 123.0) or strings."""
    try:
        return int(float(raw))
    except (TypeError, ValueError):
        raise RpcFault(INVALID_REQUEST, f"{what} must be a number, got {raw!r}") from None


def _dataset(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"#class": "dataset", "#data": rows}


def _exception(context_id: Any, code: str, message: str) -> dict[str, Any]:
    element: dict[str, Any] = {"@name": "exception", "#error": {"errorcode": code, "errorstring": message}}
    if context_id is not None:
        element["#id"] = context_id  # [A] lets a batch client tell which context failed
    return element


@dataclass
class Person:
    fields: dict[str, Any]
    profiles: set[int] = field(default_factory=set)
    #: CRM profiles the person was in and left (rows a server with `profile_status_column` keeps, marked out)
    left: set[int] = field(default_factory=set)

    @property
    def key(self) -> int:
        return int(self.fields["K_CONTACT"])

    @property
    def subject(self) -> str:
        return f"{self.fields.get('NAME', '')} {self.fields.get('FIRSTNAME', '')}".strip()

    def snapshot(self) -> dict[str, Any]:
        return {**self.fields, "profiles": sorted(self.profiles)}


# ---- outgoing webhooks ----------------------------------------------------------------------------------------
@dataclass
class WebhookConfig:
    """Where and how the simulated SYS_WEBHOOKS entry posts. Header names are [A]: Efficy's are not published.

    Modes (contracts/efficy.md §10): `url_token` sends no header and puts the secret in the URL's `token`
    parameter, as an administrator registers it for Efficy's unsigned webhooks; `hmac_body` signs the raw body
    (`sha256=<hex>`, header `X-Justin-Signature` unless set), as the 12.1 generic connector; `hmac` signs
    "<timestamp>.<body>" (our own scheme); `header` sends the static secret."""

    url: str
    secret: str
    mode: str = "hmac"
    batch_ms: int = 200
    signature_header: str | None = None  # X-Efficy-Signature (hmac) or X-Justin-Signature (hmac_body)
    timestamp_header: str = "X-Efficy-Timestamp"
    secret_header: str = "X-Efficy-Webhook-Secret"
    retry_backoff_s: float = 1.0  # [A] waits base, 2*base, 4*base ... between attempts
    max_attempts: int = 5
    #: the statuses sent again; None: any non-2xx [A]. (429, 500, 504) plays the generic-connector sender
    #: (APSIS's implementation of the spec that Efficy 12.1's connector follows), which gives up on the others
    retry_statuses: tuple[int, ...] | None = None
    #: the statuses counted as delivered; None: any 2xx. (204,) plays the generic-connector sender
    delivered_statuses: tuple[int, ...] | None = None
    timeout_s: float = 10.0
    max_batch: int = 1000  # records per POST; Efficy sends thousands at once
    #: [A] announce a change of a person's CRM profiles as records of this relation table (one per profile
    #: joined or left, key "<K_CONTACT>_<K_PROFILE>", K_CONTACT and K_PROFILE in `fields` on a Create, no fields
    #: on a Delete) instead of on the contact's own record; None: the pseudo-field PROFILES on the contact's
    #: record. Which one Efficy does is not documented (contracts/efficy.md §5, §7).
    profile_table: int | None = None

    MODES = ("url_token", "hmac_body", "hmac", "header")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"webhook mode must be one of {', '.join(self.MODES)}, not {self.mode!r}")
        if self.signature_header is None:
            self.signature_header = "X-Justin-Signature" if self.mode == "hmac_body" else "X-Efficy-Signature"

    def target(self) -> str:
        """The URL posted to: in url_token mode with the secret as its `token` parameter."""
        if self.mode != "url_token":
            return self.url
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
        return urlunsplit(parts._replace(query=urlencode([*query, ("token", self.secret)])))

    def shown_url(self) -> str:
        """The URL as deliveries and the control API show it: never with the token."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "efficy-simulator"}
        if self.mode == "url_token":
            return headers
        if self.mode == "header":
            headers[self.secret_header] = self.secret
            return headers
        if self.mode == "hmac_body":
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers[str(self.signature_header)] = f"sha256={digest}"
            return headers
        timestamp = str(int(now))
        digest = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers[self.timestamp_header] = timestamp
        headers[str(self.signature_header)] = f"sha256={digest}"
        return headers


class WebhookOutbox:
    """Collects change records, sends each batch in one POST after `batch_ms`, in order, retrying failures.

    One background thread delivers, so batches keep their order and the API threads never wait on the receiver.
    """

    def __init__(self, clock: Callable[[], float], database: str = "sim", version: str = "12.1") -> None:
        self._clock = clock
        self._database = database
        self._version = version
        self._cond = threading.Condition()
        self._config: WebhookConfig | None = None
        self._pending: list[dict[str, Any]] = []
        self._deadline = 0.0
        self._in_flight = False
        self._deliveries: list[dict[str, Any]] = []
        self._ids = count(1)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> WebhookConfig | None:
        with self._cond:
            return self._config

    def configure(self, config: WebhookConfig | None) -> None:
        with self._cond:
            self._config = config
            if config is None:
                self._pending.clear()
            elif self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="efficy-sim-webhooks", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def add(self, record: dict[str, Any]) -> None:
        """Queue one change; without a configured webhook the change is not announced (as in Efficy)."""
        with self._cond:
            if self._config is None:
                return
            if not self._pending:
                self._deadline = time.monotonic() + self._config.batch_ms / 1000
            self._pending.append(record)
            self._cond.notify_all()

    def deliveries(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(d, keys=list(d["keys"]), responses=list(d["responses"])) for d in self._deliveries]

    def flush(self, timeout: float) -> bool:
        """Wait until every queued change was delivered (or given up); True when nothing is left."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def clear(self) -> None:
        with self._cond:
            self._pending.clear()
            self._deliveries.clear()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- the delivery thread --
    def _next_batch(self) -> tuple[WebhookConfig, list[dict[str, Any]]] | None:
        with self._cond:
            while not self._stopping.is_set():
                config = self._config
                if config is not None and self._pending:
                    wait = self._deadline - time.monotonic()
                    if wait <= 0 or len(self._pending) >= config.max_batch:
                        batch = self._pending[: config.max_batch]
                        del self._pending[: config.max_batch]
                        self._deadline = time.monotonic()  # a remainder goes out at once
                        self._in_flight = True
                        return config, batch
                    self._cond.wait(wait)
                else:
                    self._cond.wait(0.5)
        return None

    def _run(self) -> None:
        while (job := self._next_batch()) is not None:
            config, batch = job
            try:
                self._deliver(config, batch)
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()

    def _deliver(self, config: WebhookConfig, records: list[dict[str, Any]]) -> None:
        body = json.dumps({"database": self._database, "version": self._version, "records": records}).encode()
        delivery: dict[str, Any] = {
            "id": next(self._ids),
            "url": config.shown_url(),
            "mode": config.mode,
            "status": "pending",
            "attempts": 0,
            "records": len(records),
            "keys": [r["key"] for r in records],
            "responses": [],
        }
        with self._cond:
            self._deliveries.append(delivery)
        for attempt in range(1, config.max_attempts + 1):
            outcome = self._post(config, body)
            with self._cond:
                delivery["attempts"] = attempt
                delivery["responses"].append(outcome)
                if isinstance(outcome, int) and 200 <= outcome < 300:
                    delivered = config.delivered_statuses is None or outcome in config.delivered_statuses
                    delivery["status"] = "delivered" if delivered else "failed"
                    return
                given_up = config.retry_statuses is not None and outcome not in config.retry_statuses
                if isinstance(outcome, int) and given_up:
                    break  # the generic sender marks the call failed, for good
            if attempt < config.max_attempts and self._stopping.wait(config.retry_backoff_s * 2 ** (attempt - 1)):
                break
        with self._cond:
            delivery["status"] = "failed"

    def _post(self, config: WebhookConfig, body: bytes) -> int | str:
        try:
            response = requests.post(
                config.target(), data=body, headers=config.headers(body, self._clock()), timeout=config.timeout_s
            )
        except requests.Timeout:
            return "timeout"
        except requests.RequestException as exc:
            return f"error: {type(exc).__name__}"
        response.close()
        return response.status_code


# ---- the simulator --------------------------------------------------------------------------------------------
class EfficySimulator(SimServer):
    """An in-memory Efficy Enterprise 12.1 with its connector REST API and batched, signed webhooks."""

    name = "efficy"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str = "efficy-test-key",
        require_content_length: bool = True,
        clock: Callable[[], float] | None = None,
        stamp_zone: str | None = None,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        #: D_CHANGE in this zone's naive local time (None: UTC). Which one a real Efficy server writes is not
        #: documented (contracts/efficy.md); a local zone is what makes the stamps go back once a year.
        self.stamp_zone = stamp_zone
        self.require_content_length = require_content_length
        #: a connector whose installation caps the page size below what is asked answers shorter pages without
        #: saying so (contracts/efficy.md §4: "APSIS sets the page size per installation"); None: no cap
        self.page_size_cap: int | None = None
        #: the one spelling of the page-size parameter this server reads ("page_size" or "pageSize"; None: both)
        #: and the size it uses when that one is absent (contract §4: "pageSize/page_size", set per installation)
        self.page_size_param: str | None = None
        self.default_page_size = MAX_PAGE_SIZE
        #: "wrapped" ({"records": [...], "page", "page_size"}, assumed) or "array" (a bare list of records, as
        #: APSIS's own generic-connector code reads a records page: contract §4 and apsis-one.md MAG3)
        self.records_shape = "wrapped"
        #: the order of the records export: "K_CONTACT" (what the full sync assumes) or "D_CHANGE" (last changed
        #: last); Efficy does not document it (contract §4)
        self.export_order = "K_CONTACT"
        #: what a consult answers for a detail the server does not know: "error" (a business error) or "empty"
        #: (an empty dataset, read as "member of no CRM profile"); which one a real server does is not documented
        self.unknown_detail = "error"
        #: a server whose CRM-profile rows carry a consent status in this column, and keep the row of a profile
        #: the person left, marked "opt-out" (whether Efficy's rows do is not documented: contract §5); None:
        #: a row per profile the person is in, and nothing else
        self.profile_status_column: str | None = None
        #: a server that hosts several customers: a call, JSON-RPC or connector REST, that does not name this
        #: alias (header X-Efficy-Customer or ?customer=) is refused with 400 (contract §2: the alias is needed on
        #: such a server; what it answers without one is not documented). None: one customer, no alias needed
        self.customer: str | None = None
        self._clock = clock or time.time
        self._last_stamp_ms = 0
        self._handles = count(1)
        self._outbox = WebhookOutbox(self._clock)
        self._sessions: set[str] = set()
        self._session_stats = {"created": 0, "reused": 0, "expired": 0}
        self._knob_defaults = {name: getattr(self, name) for name in self.SERVER_KNOBS}
        self._init_state()
        self._routes()

    def _init_state(self) -> None:
        self._persons: dict[int, Person] = {}
        self._sorted_keys: list[int] = []
        self._custom_types: dict[str, str] = {}
        self._profiles: dict[int, str] = dict(DEFAULT_PROFILES)
        self._queries: dict[int, dict[str, Any]] = {}

    def _routes(self) -> None:
        self.route("/crm/json", self._rpc, methods=["POST"])
        self.route("/v1/records/<entity>", self._rest_records, methods=["GET"])
        self.route("/v1/records/<entity>/<int:key>", self._rest_record, methods=["GET"])
        self.route("/v1/schema/<entity>", self._rest_schema, methods=["GET"])
        self.route("/v1/profiles", self._rest_profiles, methods=["GET"])
        self.route("/v1/profile-lists", self._rest_profile_lists, methods=["GET"])
        self.route("/v1/profile-lists/<int:list_id>/members", self._rest_members, methods=["GET"])
        ctl = {"control": True}
        self.route("/_sim/persons", self._ctl_upsert, methods=["POST"], **ctl)
        self.route("/_sim/persons", self._ctl_list, methods=["GET"], **ctl)
        self.route("/_sim/persons/<int:key>", self._ctl_get, methods=["GET"], **ctl)
        self.route("/_sim/persons/<int:key>", self._ctl_patch, methods=["PATCH"], **ctl)
        self.route("/_sim/persons/<int:key>", self._ctl_delete, methods=["DELETE"], **ctl)
        self.route("/_sim/queries", self._ctl_queries, methods=["POST"], **ctl)
        self.route("/_sim/profiles", self._ctl_profiles, methods=["POST"], **ctl)
        self.route("/_sim/webhooks", self._ctl_webhook, methods=["POST"], **ctl)
        self.route("/_sim/webhooks", self._ctl_webhook_off, methods=["DELETE"], **ctl)
        self.route("/_sim/webhooks/deliveries", self._ctl_deliveries, methods=["GET"], **ctl)
        self.route("/_sim/webhooks/flush", self._ctl_flush, methods=["POST"], **ctl)
        self.route("/_sim/sessions/expire", self._ctl_expire_sessions, methods=["POST"], **ctl)
        self.route("/_sim/server", self._ctl_server, methods=["GET", "POST"], **ctl)

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def stop_webhooks(self) -> None:
        """Send no more webhooks; the API goes on answering. A local stack's stop calls it first, so that no
        change reaches its front once AWS is going down (a delivery under way ends first)."""
        self._outbox.stop()

    def stop(self) -> None:
        self.stop_webhooks()
        super().stop()

    def reset(self) -> None:
        """Back to an empty CRM with the default profiles, no webhook and the default server (its knobs: a test
        that set one and failed before setting it back left the next test of a shared simulator playing another
        server). Sessions survive, so clients keep going."""
        super().reset()
        self._outbox.configure(None)
        self._outbox.clear()
        with self._lock:
            self._init_state()
            for name, value in self._knob_defaults.items():
                setattr(self, name, value)

    # ---- Python control API (also behind /_sim) ----------------------------------------------------------------
    def upsert_persons(self, persons: list[dict[str, Any]], *, notify: bool = False, user: str = "ADMIN") -> int:
        """Seed persons (merging into existing ones). Seeding announces nothing unless `notify`."""
        with self._lock:
            for raw in persons:
                data = dict(raw)
                key = _as_key(data.pop("K_CONTACT")) if "K_CONTACT" in data else self._next_key()
                profiles = data.pop("profiles", None)
                if profiles is not None:
                    self._define_missing_profiles(profiles)
                self._write(key, data, profiles, user=user, notify=notify, always=True)
        return len(persons)

    def get_person(self, key: int) -> dict[str, Any] | None:
        with self._lock:
            person = self._persons.get(int(key))
            return person.snapshot() if person else None

    def list_persons(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._persons[k].snapshot() for k in self._sorted_keys]

    def patch_person(
        self, key: int, fields: dict[str, Any], profiles: list[int] | None = None, *, user: str = "ADMIN"
    ) -> dict[str, Any]:
        """A user saving the contact card: always a change (new D_CHANGE) and always a webhook record."""
        with self._lock:
            if int(key) not in self._persons:
                raise KeyError(key)
            if profiles is not None:
                self._define_missing_profiles(profiles)
            return self._write(int(key), fields, profiles, user=user, notify=True, always=True)

    def delete_person(self, key: int, *, user: str = "ADMIN") -> None:
        with self._lock:
            if int(key) not in self._persons:
                raise KeyError(key)
            self._remove(int(key), user=user)

    def set_queries(self, queries: list[dict[str, Any]]) -> None:
        """Add or replace saved queries (by K_QUERY); members are K_CONTACTs, kept even if not (yet) persons."""
        with self._lock:
            for query in queries:
                qid = _as_key(query["K_QUERY"], "K_QUERY")
                self._queries[qid] = {
                    "K_QUERY": qid,
                    "name": str(query.get("name", f"Query {qid}")),
                    "type": str(query.get("type", "dynamic")),
                    "members": sorted({_as_key(m, "member") for m in query.get("members", [])}),
                }

    def set_profiles(self, profiles: list[dict[str, Any]]) -> None:
        """Add or rename CRM Profile definitions (by K_PROFILE)."""
        with self._lock:
            for profile in profiles:
                self._profiles[_as_key(profile["K_PROFILE"], "K_PROFILE")] = str(profile["NAME"])

    def configure_webhook(
        self,
        url: str,
        secret: str,
        mode: str = "hmac",
        batch_ms: int = 200,
        signature_header: str | None = None,
        timestamp_header: str = "X-Efficy-Timestamp",
        secret_header: str = "X-Efficy-Webhook-Secret",
        **options: Any,
    ) -> None:
        """Point the webhook at `url`; `options`: retry_backoff_s, max_attempts, retry_statuses,
        delivered_statuses, timeout_s, max_batch, profile_table."""
        self._outbox.configure(
            WebhookConfig(
                url=url,
                secret=secret,
                mode=mode,
                batch_ms=int(batch_ms),
                signature_header=signature_header,
                timestamp_header=timestamp_header,
                secret_header=secret_header,
                **options,
            )
        )

    def disable_webhook(self) -> None:
        self._outbox.configure(None)

    def deliveries(self) -> list[dict[str, Any]]:
        return self._outbox.deliveries()

    def flush_webhooks(self, timeout: float = 10.0) -> bool:
        return self._outbox.flush(timeout)

    def expire_sessions(self) -> None:
        """Forget every EfficySession: the next call that sends one gets 401, as after a server-side timeout."""
        with self._lock:
            self._sessions.clear()

    def session_stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._session_stats)

    # ---- state changes (callers hold self._lock) ---------------------------------------------------------------
    def _next_key(self) -> int:
        return (self._sorted_keys[-1] if self._sorted_keys else 0) + 1

    def _next_stamp(self) -> str:
        """D_CHANGE: strictly increasing per simulator, with milliseconds so same-second changes still order."""
        now_ms = int(self._clock() * 1000)
        self._last_stamp_ms = max(now_ms, self._last_stamp_ms + 1)
        return _format_ms(self._last_stamp_ms, self.stamp_zone)

    def _define_missing_profiles(self, profiles: Iterable[Any]) -> None:
        """Seeding may name profiles nobody defined; give them a placeholder name rather than refuse the seed."""
        for pid in profiles:
            self._profiles.setdefault(_as_key(pid, "profile"), f"Profile {_as_key(pid, 'profile')}")

    def _note_field(self, name: str, raw: Any) -> None:
        if name not in STANDARD_FIELDS and name not in self._custom_types:
            self._custom_types[name] = "datetime" if name.startswith("D_") else _value_type(raw)

    def _write(
        self,
        key: int,
        fields: dict[str, Any],
        profiles: Iterable[Any] | None,
        *,
        user: str,
        notify: bool,
        always: bool,
    ) -> dict[str, Any]:
        """Apply one save of a contact; stamp D_CHANGE and queue the webhook record when something was saved."""
        existing = self._persons.get(key)
        person = existing or Person(fields={"K_CONTACT": key, **NEW_PERSON})
        changed: dict[str, Any] = {}
        for name, raw in fields.items():
            if name in READ_ONLY_FIELDS or name == "profiles":
                continue
            self._note_field(name, raw)
            value = _as_efficy_value(name, raw)
            if person.fields.get(name) != value:
                changed[name] = value
        new_profiles = person.profiles if profiles is None else {_as_key(p, "profile") for p in profiles}
        joined, left = new_profiles - person.profiles, person.profiles - new_profiles
        relation_table = self._outbox.config.profile_table if self._outbox.config else None
        if new_profiles != person.profiles and relation_table is None:
            # [A] a membership change is announced as a pseudo-field PROFILES holding the new list
            changed["PROFILES"] = sorted(new_profiles)
        if not (changed or joined or left or always or existing is None):
            return person.snapshot()
        person.fields.update({k: v for k, v in changed.items() if k != "PROFILES"})
        person.left = (person.left | left) - new_profiles
        person.profiles = set(new_profiles)
        person.fields["D_CHANGE"] = self._next_stamp()
        if existing is None:
            self._persons[key] = person
            bisect.insort(self._sorted_keys, key)
        if notify:
            if existing is None:
                announced = {k: v for k, v in person.fields.items() if k not in READ_ONLY_FIELDS}
                if person.profiles:
                    announced["PROFILES"] = sorted(person.profiles)
                self._announce(person, "Create", announced, user)
            elif relation_table is None or changed or (always and not (joined or left)):
                self._announce(person, "Update", changed, user)  # a relation change alone: its records only
            if relation_table is not None:
                self._announce_relations(person, relation_table, joined, left, user)
        return person.snapshot()

    def _remove(self, key: int, *, user: str) -> None:
        person = self._persons.pop(key)
        self._sorted_keys.pop(bisect.bisect_left(self._sorted_keys, key))
        person.fields["D_CHANGE"] = self._next_stamp()
        self._announce(person, "Delete", {}, user)

    def _announce(self, person: Person, operation: str, fields: dict[str, Any], user: str) -> None:
        self._outbox.add(
            {
                "table": CONT_TABLE,
                "key": person.key,
                "operation": operation,
                "user": user,
                "subject": person.subject,
                "fields": fields,
                "date": person.fields["D_CHANGE"] + "Z",
            }
        )

    def _announce_relations(self, person: Person, table: int, joined: set[int], left: set[int], user: str) -> None:
        for pid, operation in [*((p, "Create") for p in sorted(joined)), *((p, "Delete") for p in sorted(left))]:
            fields = {"K_CONTACT": person.key, "K_PROFILE": pid} if operation == "Create" else {}
            record = {"table": table, "key": f"{person.key}_{pid}", "operation": operation, "user": user}
            self._outbox.add({**record, "fields": fields, "date": person.fields["D_CHANGE"] + "Z"})

    def _row(self, person: Person, fields: list[str] | None = None) -> dict[str, Any]:
        """All columns, or the asked ones plus K_CONTACT and D_CHANGE; a column nobody has is simply absent."""
        if fields is None:
            return dict(person.fields)
        row: dict[str, Any] = {"K_CONTACT": person.key, "D_CHANGE": person.fields["D_CHANGE"]}
        for name in fields:
            if name in person.fields:
                row[name] = person.fields[name]
            elif name in self._custom_types:
                row[name] = EMPTY_DATE if name.startswith("D_") else ""
        return row

    def _check_fields(self, fields: list[str]) -> None:
        """The connector API refuses fields it does not know [A]; JSON-RPC just leaves them out."""
        unknown = [f for f in fields if f not in STANDARD_FIELDS and f not in self._custom_types]
        if unknown:
            raise RestFault(400, "unknown_field", f"unknown contact field(s): {', '.join(unknown)}")

    # ---- JSON-RPC ------------------------------------------------------------------------------------------
    def _names_customer(self, request: Request) -> bool:
        named = request.headers.get("X-Efficy-Customer") or request.args.get("customer")
        return self.customer is None or named == self.customer

    def _rpc(self, request: Request) -> Response:
        if not self._key_matches(request.headers.get("X-Efficy-ApiKey")):
            return Response(b"", status=401)
        if not self._names_customer(request):
            return self.error_response(400, "unknown customer", "this server hosts several customers: name one")
        session = request.cookies.get(SESSION_COOKIE)
        with self._lock:
            if session and session not in self._sessions:
                # [A] a timed-out session answers 401 even with a valid key; clients log on again (contract 2)
                self._session_stats["expired"] += 1
                return Response(b"", status=401)
            if session:
                self._session_stats["reused"] += 1
        raw = request.get_data()
        if self.require_content_length and not request.headers.get("Content-Length"):
            # Efficy 12.1 cut such bodies in half and then complained about JSON (see contract section 8)
            answer: list[dict[str, Any]] = [_exception(None, INVALID_JSON, "invalid JSON: body without Content-Length")]
        else:
            answer = self._run_batch(raw)
        response = json_response(answer)
        self._session_cookie(request, response, session)
        return response

    def _session_cookie(self, request: Request, response: Response, session: str | None) -> None:
        logoff = request.headers.get("X-Efficy-Logoff", "").lower() in ("true", "1", "yes")
        with self._lock:
            if logoff:
                if session:
                    self._sessions.discard(session)
                    response.delete_cookie(SESSION_COOKIE, path="/")
            elif not session:
                session = secrets.token_hex(16)
                self._sessions.add(session)
                self._session_stats["created"] += 1
                response.set_cookie(SESSION_COOKIE, session, path="/", httponly=True)

    def _run_batch(self, raw: bytes) -> list[dict[str, Any]]:
        try:
            contexts = json.loads(raw)
        except ValueError:
            return [_exception(None, INVALID_JSON, "invalid JSON")]
        if not isinstance(contexts, list):
            return [_exception(None, INVALID_REQUEST, "the body must be an array of contexts")]
        return [self._run_context(ctx) for ctx in contexts]

    def _run_context(self, ctx: Any) -> dict[str, Any]:
        if not isinstance(ctx, dict):
            return _exception(None, INVALID_REQUEST, "a context must be an object")
        kind = str(ctx.get("@name", "")).lower()
        funcs = ctx.get("@func") or []
        try:
            if not isinstance(funcs, list) or not all(isinstance(f, dict) for f in funcs):
                raise RpcFault(INVALID_REQUEST, "@func must be an array of objects")
            if kind == "api":
                return self._api_context(ctx, funcs)
            self.count_call(f"POST /crm/json {kind}")
            if kind == "consult":
                return self._consult(ctx, funcs)
            if kind == "edit":
                return self._edit(ctx, funcs)
            raise RpcFault(INVALID_REQUEST, f"unsupported context {kind!r}")
        except RpcFault as fault:
            return _exception(ctx.get("#id"), fault.code, fault.message)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed parameter, as Efficy would report it
            return _exception(ctx.get("#id"), INVALID_REQUEST, f"invalid parameter: {exc}")

    def _check_entity(self, entity: Any) -> None:
        if str(entity or "").lower() != "cont":
            raise RpcFault(UNKNOWN_ENTITY, f"the simulator knows only entity Cont, not {entity!r}")

    def _profile_rows(self, person: Person) -> list[dict[str, Any]]:
        column = self.profile_status_column
        if column is None:
            return [{"K_PROFILE": pid, "NAME": self._profiles.get(pid, "")} for pid in sorted(person.profiles)]
        status = {**dict.fromkeys(person.left, "opt-out"), **dict.fromkeys(person.profiles, "opt-in")}
        return [{"K_PROFILE": pid, "NAME": self._profiles.get(pid, ""), column: status[pid]} for pid in sorted(status)]

    def _read_func(self, func: dict[str, Any], person: Person) -> dict[str, Any]:
        name = str(func.get("@name", "")).lower()
        if name == "master":
            return {"#result": _dataset([self._row(person, func.get("fields"))])}
        if name == "detail":
            if str(func.get("detail", "")).lower() != PROFILE_DETAIL:
                if self.unknown_detail == "empty":
                    return {"#result": _dataset([])}
                raise RpcFault(UNKNOWN_DETAIL, f"detail {func.get('detail')!r} is not simulated")
            return {"#result": _dataset(self._profile_rows(person))}
        if name == "category":
            return {"#result": _dataset([])}
        raise RpcFault(UNKNOWN_FUNCTION, f"unsupported function {func.get('@name')!r}")

    def _consult(self, ctx: dict[str, Any], funcs: list[dict[str, Any]]) -> dict[str, Any]:
        self._check_entity(ctx.get("entity"))
        key = _as_key(ctx.get("key"))
        with self._lock:
            person = self._persons.get(key)
            if person is None:
                raise RpcFault(RECORD_NOT_FOUND, f"Cont record {key} does not exist")
            results = [{**func, **self._read_func(func, person)} for func in funcs]
        return {**ctx, "key": key, "consulthandle": next(self._handles), "@func": results}

    def _edit(self, ctx: dict[str, Any], funcs: list[dict[str, Any]]) -> dict[str, Any]:
        """An edit context is all or nothing: a failing function leaves the record untouched."""
        self._check_entity(ctx.get("entity"))
        key = _as_key(ctx.get("key", 0))
        with self._lock:
            current = self._persons.get(key)
            if key and current is None:
                raise RpcFault(RECORD_NOT_FOUND, f"Cont record {key} does not exist")
            if current is None:
                current = Person(fields={"K_CONTACT": 0, **NEW_PERSON, "D_CHANGE": EMPTY_DATE})
            work = Person(fields=dict(current.fields), profiles=set(current.profiles))
            updates: dict[str, Any] = {}
            results = [{**func, **self._edit_func(func, work, updates)} for func in funcs]
            inserted = key == 0
            if ctx.get("commit") and (updates or work.profiles != current.profiles or inserted):
                key = key or self._next_key()
                self._write(key, updates, work.profiles, user="API", notify=True, always=inserted)
        return {**ctx, "key": key, "edithandle": next(self._handles), "inserted": inserted, "@func": results}

    def _edit_func(self, func: dict[str, Any], work: Person, updates: dict[str, Any]) -> dict[str, Any]:
        name = str(func.get("@name", "")).lower()
        if name == "update":
            data = func.get("@data")
            if not isinstance(data, dict):
                raise RpcFault(INVALID_REQUEST, "update needs an @data object")
            updates.update({k: v for k, v in data.items() if k not in READ_ONLY_FIELDS})
            work.fields.update({k: _as_efficy_value(k, v) for k, v in data.items() if k not in READ_ONLY_FIELDS})
            return {}
        if name in ("insertdetail", "deletedetail", "cleardetail"):
            if str(func.get("detail", "")).lower() != PROFILE_DETAIL:
                raise RpcFault(UNKNOWN_DETAIL, f"detail {func.get('detail')!r} is not simulated")
            if name == "cleardetail":
                work.profiles.clear()
                return {}
            pid = _as_key(func.get("detailkey"), "detailkey")
            if name == "insertdetail":
                if pid not in self._profiles:
                    raise RpcFault(UNKNOWN_PROFILE, f"CRM profile {pid} does not exist")
                work.profiles.add(pid)  # [A] inserting an existing relation is a no-op
            elif pid not in work.profiles:
                raise RpcFault(RELATION_NOT_FOUND, f"contact is not in CRM profile {pid}")
            else:
                work.profiles.discard(pid)
            return {}
        if name in ("activatecategory", "setusers", "setusersecurity", "reference"):
            return {}
        return self._read_func(func, work)

    # -- api context --
    def _api_context(self, ctx: dict[str, Any], funcs: list[dict[str, Any]]) -> dict[str, Any]:
        results = []
        for func in funcs:
            name = str(func.get("@name", "")).lower()
            self.count_call(f"POST /crm/json {name}")
            handler = self._api_funcs().get(name)
            if handler is None:
                raise RpcFault(UNKNOWN_FUNCTION, f"unsupported api function {func.get('@name')!r}")
            with self._lock:
                results.append({**func, **handler(func)})
        return {**ctx, "@func": results}

    def _api_funcs(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "query": self._api_query,
            "consultmanyex": self._api_consultmanyex,
            "contactidsfromemailaddresses": self._api_ids_from_emails,
            "addlink": self._api_addlink,
            "deletelink": self._api_deletelink,
            "delete": self._api_delete,
            "currentuserfullname": lambda f: {"#result": "Simulator API user"},
            "currentusername": lambda f: {"#result": "API"},
            "currentdatabasealias": lambda f: {"#result": "sim"},
        }

    def _api_query(self, func: dict[str, Any]) -> dict[str, Any]:
        """Rows of a saved contact query; queryparams are accepted and ignored [A]."""
        qid = _as_key(func.get("key"), "query key")
        query = self._queries.get(qid)
        if query is None:
            raise RpcFault(UNKNOWN_QUERY, f"query {qid} does not exist")
        members = [k for k in query["members"] if k in self._persons]
        limit = int(func.get("recordcount", func.get("recordCount", 0)) or 0)
        if limit > 0:
            members = members[:limit]
        rows = [
            {name: self._persons[k].fields.get(name, "") for name in ("K_CONTACT", "NAME", "FIRSTNAME", "EMAIL1")}
            for k in members
        ]
        return {"#result": _dataset(rows)}

    def _api_consultmanyex(self, func: dict[str, Any]) -> dict[str, Any]:
        self._check_entity(func.get("entity"))
        sep = str(func.get("separator") or ";")
        names = [n for n in str(func.get("findfield", "")).split(sep) if n]
        values = str(func.get("keys", "")).split(sep)
        if len(names) != len(values):
            raise RpcFault(INVALID_REQUEST, "findfield and keys must have as many entries")
        people = [
            p
            for p in (self._persons[k] for k in self._sorted_keys)
            if all(str(p.fields.get(n, "")) == v for n, v in zip(names, values, strict=True))
        ]
        order = str(func.get("orderbyfield") or "K_CONTACT").split()
        by = order[0]
        people.sort(
            key=lambda p: p.key if by == "K_CONTACT" else str(p.fields.get(by, "")),
            reverse=len(order) > 1 and order[1].lower() == "desc",
        )
        return {"#result": _dataset([dict(p.fields) for p in people])}

    def _api_ids_from_emails(self, func: dict[str, Any]) -> dict[str, Any]:
        wanted = {r.strip().lower() for r in str(func.get("recipients", "")).replace(",", ";").split(";")}
        wanted.discard("")
        rows = []
        for key in self._sorted_keys:
            person = self._persons[key]
            for name, value in person.fields.items():
                if name.startswith("EMAIL") and value.lower() in wanted:
                    rows.append({"K_CONTACT": key, "NAME": person.fields["NAME"], "EMAIL": value})
                    break
        return {"#result": _dataset(rows)}

    def _link_target(self, func: dict[str, Any]) -> tuple[Person, int]:
        self._check_entity(func.get("entity"))
        if str(func.get("detail", "")).lower() != PROFILE_DETAIL:
            raise RpcFault(UNKNOWN_DETAIL, f"detail {func.get('detail')!r} is not simulated")
        key = _as_key(func.get("key"))
        person = self._persons.get(key)
        if person is None:
            raise RpcFault(RECORD_NOT_FOUND, f"Cont record {key} does not exist")
        return person, _as_key(func.get("detailkey"), "detailkey")

    def _api_addlink(self, func: dict[str, Any]) -> dict[str, Any]:
        person, pid = self._link_target(func)
        if pid not in self._profiles:
            raise RpcFault(UNKNOWN_PROFILE, f"CRM profile {pid} does not exist")
        if pid in person.profiles:
            if not func.get("ignoreexisting"):
                raise RpcFault(LINK_EXISTS, f"contact is already in CRM profile {pid}")
            return {"#result": ""}
        self._write(person.key, {}, person.profiles | {pid}, user="API", notify=True, always=False)
        return {"#result": ""}

    def _api_deletelink(self, func: dict[str, Any]) -> dict[str, Any]:
        person, pid = self._link_target(func)
        if pid not in person.profiles:
            raise RpcFault(RELATION_NOT_FOUND, f"contact is not in CRM profile {pid}")
        self._write(person.key, {}, person.profiles - {pid}, user="API", notify=True, always=False)
        return {"#result": ""}

    def _api_delete(self, func: dict[str, Any]) -> dict[str, Any]:
        self._check_entity(func.get("entity"))
        keys = [_as_key(k) for k in str(func.get("keys", "")).split(";") if k.strip()]
        missing = [k for k in keys if k not in self._persons]
        if missing:
            raise RpcFault(RECORD_NOT_FOUND, f"Cont record(s) {missing} do not exist")
        for key in keys:
            self._remove(key, user="API")
        return {"#result": ""}

    # ---- connector REST ------------------------------------------------------------------------------------
    def error_response(self, status: int, title: str, detail: str) -> Response:
        code = title.lower().replace(" ", "_") or "error"
        return json_response({"error": {"code": code, "message": detail or title}}, status)

    def _key_matches(self, given: str | None) -> bool:
        return hmac.compare_digest((given or "").encode(), self.api_key.encode())

    def _rest_guard(self, request: Request) -> None:
        if not self._key_matches(request.headers.get("X-API-Key")):
            raise RestFault(401, "unauthorized", "missing or wrong X-API-Key")
        if not self._names_customer(request):
            raise RestFault(400, "unknown_customer", "this server hosts several customers: name one")

    def _rest(self, request: Request, produce: Callable[[], Any]) -> Response:
        try:
            self._rest_guard(request)
            return json_response(produce())
        except RestFault as fault:
            return self._fault_response(fault)

    def _fault_response(self, fault: RestFault) -> Response:
        return json_response({"error": {"code": fault.code, "message": fault.message}}, fault.status)

    @staticmethod
    def _int_arg(request: Request, names: tuple[str, ...], default: int, low: int, high: int) -> int:
        raw = next((request.args[n] for n in names if n in request.args), None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise RestFault(400, "invalid_parameter", f"{names[0]} must be an integer") from None
        if not low <= value <= high:
            raise RestFault(400, "invalid_parameter", f"{names[0]} must be between {low} and {high}")
        return value

    @staticmethod
    def _list_arg(request: Request, name: str) -> list[str]:
        return [part.strip() for part in request.args.get(name, "").split(",") if part.strip()]

    @staticmethod
    def _check_entity_rest(entity: str) -> None:
        if entity != "contacts":
            raise RestFault(404, "not_found", f"unknown entity {entity!r}; the simulator serves 'contacts'")

    def _rest_records(self, request: Request, entity: str) -> Response:
        def produce() -> Any:
            self._check_entity_rest(entity)
            page = self._int_arg(request, ("page",), 0, 0, 10**9)
            names = (self.page_size_param,) if self.page_size_param else ("page_size", "pageSize")
            size = self._int_arg(request, names, self.default_page_size, 1, MAX_PAGE_SIZE)
            size = min(size, self.page_size_cap or size)
            fields = self._list_arg(request, "fields") or None
            try:
                ids = sorted({int(i) for i in self._list_arg(request, "ids")})
            except ValueError:
                raise RestFault(400, "invalid_parameter", "ids must be integers") from None
            with_profiles = "profiles" in self._list_arg(request, "include")  # [A] extension
            since = request.args.get("changed_since", "").rstrip("Z")  # [A] extension
            with self._lock:
                if fields:
                    self._check_fields(fields)
                keys = [k for k in ids if k in self._persons] if ids else self._export_keys()
                if since:
                    keys = [k for k in keys if self._persons[k].fields["D_CHANGE"] > since]
                records = []
                for key in keys[page * size : (page + 1) * size]:
                    person = self._persons[key]
                    record = self._row(person, fields) if fields else dict(person.fields)
                    if with_profiles:
                        record["profiles"] = sorted(person.profiles)
                    records.append(record)
            if self.records_shape == "array":
                return records
            return {"records": records, "page": page, "page_size": size}

        return self._rest(request, produce)

    def _export_keys(self) -> list[int]:
        if self.export_order == "D_CHANGE":
            return sorted(self._sorted_keys, key=lambda k: (str(self._persons[k].fields.get("D_CHANGE") or ""), k))
        return self._sorted_keys

    def _rest_record(self, request: Request, entity: str, key: int) -> Response:
        """One record. A missing one is 404, as the 12.1 connector answers it (contract §10), unlike JSON-RPC,
        which answers HTTP 200 with the error in the body."""

        def produce() -> dict[str, Any]:
            self._check_entity_rest(entity)
            with self._lock:
                person = self._persons.get(key)
                if person is None:
                    raise RestFault(404, "not_found", f"Cont record {key} does not exist")
                record = dict(person.fields)
                if "profiles" in self._list_arg(request, "include"):
                    record["profiles"] = sorted(person.profiles)
            return record

        return self._rest(request, produce)

    def _rest_schema(self, request: Request, entity: str) -> Response:
        def produce() -> list[dict[str, str]]:
            self._check_entity_rest(entity)
            with self._lock:
                custom = sorted(self._custom_types.items())
            standard = [{"name": n, "type": t, "label": label} for n, (t, label) in STANDARD_FIELDS.items()]
            return standard + [{"name": n, "type": t, "label": n} for n, t in custom]

        return self._rest(request, produce)

    def _rest_profiles(self, request: Request) -> Response:
        def produce() -> list[dict[str, Any]]:
            with self._lock:
                return [{"id": pid, "name": name} for pid, name in sorted(self._profiles.items())]

        return self._rest(request, produce)

    def _rest_profile_lists(self, request: Request) -> Response:
        def produce() -> list[dict[str, Any]]:
            with self._lock:
                return [
                    {"id": q["K_QUERY"], "name": q["name"], "type": q["type"]} for _, q in sorted(self._queries.items())
                ]

        return self._rest(request, produce)

    def _rest_members(self, request: Request, list_id: int) -> Response:
        def produce() -> dict[str, Any]:
            page = self._int_arg(request, ("page",), 0, 0, 10**9)
            size = self._int_arg(request, ("page_size", "pageSize"), MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE)
            with self._lock:
                query = self._queries.get(list_id)
                if query is None:
                    raise RestFault(404, "not_found", f"profile list {list_id} does not exist")
                members = [k for k in query["members"] if k in self._persons]
            return {"ids": members[page * size : (page + 1) * size], "page": page, "page_size": size}

        return self._rest(request, produce)

    # ---- control routes ------------------------------------------------------------------------------------
    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise RestFault(400, "invalid_body", "the body must be a JSON object")
        return body

    def _control(self, request: Request, produce: Callable[[], Any], status: int = 200) -> Response:
        try:
            return json_response(produce(), status)
        except RestFault as fault:
            return self._fault_response(fault)
        except (KeyError, ValueError, TypeError, RpcFault) as exc:
            return json_response({"error": {"code": "invalid_body", "message": str(exc)}}, 400)

    def _ctl_upsert(self, request: Request) -> Response:
        def produce() -> dict[str, Any]:
            body = self._body(request)
            persons = body.get("persons")
            if not isinstance(persons, list) or not all(isinstance(p, dict) for p in persons):
                raise RestFault(400, "invalid_body", "persons must be an array of objects")
            return {"upserted": self.upsert_persons(persons, notify=bool(body.get("notify")))}

        return self._control(request, produce)

    def _ctl_list(self, request: Request) -> Response:
        return json_response({"persons": self.list_persons()})

    def _ctl_get(self, request: Request, key: int) -> Response:
        person = self.get_person(key)
        if person is None:
            return json_response({"error": {"code": "not_found", "message": f"no person {key}"}}, 404)
        return json_response(person)

    def _ctl_patch(self, request: Request, key: int) -> Response:
        def produce() -> dict[str, Any]:
            body = self._body(request)
            profiles = body.pop("profiles", None)
            fields = body["fields"] if isinstance(body.get("fields"), dict) else body
            if self.get_person(key) is None:
                raise RestFault(404, "not_found", f"no person {key}")
            return self.patch_person(key, fields, profiles)

        return self._control(request, produce)

    def _ctl_delete(self, request: Request, key: int) -> Response:
        try:
            self.delete_person(key)
        except KeyError:
            return json_response({"error": {"code": "not_found", "message": f"no person {key}"}}, 404)
        return json_response({"deleted": key})

    def _ctl_queries(self, request: Request) -> Response:
        def produce() -> dict[str, Any]:
            queries = self._body(request).get("queries")
            if not isinstance(queries, list):
                raise RestFault(400, "invalid_body", "queries must be an array")
            self.set_queries(queries)
            return {"queries": len(queries)}

        return self._control(request, produce)

    def _ctl_profiles(self, request: Request) -> Response:
        def produce() -> dict[str, Any]:
            profiles = self._body(request).get("profiles")
            if not isinstance(profiles, list):
                raise RestFault(400, "invalid_body", "profiles must be an array")
            self.set_profiles(profiles)
            return {"profiles": len(profiles)}

        return self._control(request, produce)

    def _ctl_webhook(self, request: Request) -> Response:
        def produce() -> dict[str, Any]:
            body = self._body(request)
            allowed = set(WebhookConfig.__dataclass_fields__)
            unknown = set(body) - allowed
            if unknown:
                raise RestFault(400, "invalid_body", f"unknown fields {sorted(unknown)}; allowed {sorted(allowed)}")
            self.configure_webhook(**body)
            config = self._outbox.config
            if not config:
                return {}
            return {**{k: v for k, v in asdict(config).items() if k != "secret"}, "url": config.shown_url()}

        return self._control(request, produce)

    def _ctl_webhook_off(self, request: Request) -> Response:
        self.disable_webhook()
        return json_response({"webhook": None})

    def _ctl_deliveries(self, request: Request) -> Response:
        return json_response({"deliveries": self.deliveries()})

    def _ctl_flush(self, request: Request) -> Response:
        body = request.get_json(force=True, silent=True) or {}
        timeout = min(float(body.get("timeout", 10)), 60.0)
        return json_response({"flushed": self.flush_webhooks(timeout)})

    #: how this server behaves where Efficy's is not documented (the attributes of the same names); settable over
    #: HTTP so that a running local stack can play another server
    SERVER_KNOBS = (
        "profile_status_column",
        "customer",
        "unknown_detail",
        "page_size_cap",
        "page_size_param",
        "default_page_size",
        "records_shape",
        "export_order",
    )
    #: the knobs that take one of a few values
    KNOB_CHOICES: dict[str, tuple[str, ...]] = {
        "unknown_detail": ("error", "empty"),
        "records_shape": ("wrapped", "array"),
        "export_order": ("K_CONTACT", "D_CHANGE"),
    }

    def _ctl_server(self, request: Request) -> Response:
        def produce() -> dict[str, Any]:
            if request.method == "POST":
                body = self._body(request)
                unknown = set(body) - set(self.SERVER_KNOBS)
                if unknown:
                    raise RestFault(
                        400, "invalid_body", f"unknown {sorted(unknown)}; allowed {list(self.SERVER_KNOBS)}"
                    )
                for name, value in body.items():
                    choices = self.KNOB_CHOICES.get(name)
                    if choices is not None and value not in choices:
                        # a misspelt value silently played the default server, and a test "passed" against it
                        raise RestFault(400, "invalid_body", f"{name} must be one of {list(choices)}, not {value!r}")
                for name, value in body.items():
                    setattr(self, name, value)
            return {name: getattr(self, name) for name in self.SERVER_KNOBS}

        return self._control(request, produce)

    def _ctl_expire_sessions(self, request: Request) -> Response:
        self.expire_sessions()
        return json_response({"expired": True})
