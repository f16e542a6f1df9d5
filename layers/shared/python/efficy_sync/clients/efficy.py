"""Efficy Enterprise client: JSON-RPC (`/crm/json`) for per-person reads and writes, connector REST for paging.

The pieces of talking to Efficy are kept apart, the way Singer-SDK streams do it, so a second flavour (a REST-only
connector, another auth scheme) overrides one small method and keeps the rest:
request building (`_consult_context`, `_edit_context`, `_api_context`), authentication (`_auth_headers`),
transport with the retry policy (`_send`, retries and backoff live in the session adapter), status mapping
(`_check_status`) and parsing (`_rpc`, `rpc_error`, `dataset_rows`, `_person_from_*`).

Efficy answers HTTP 200 for business errors, in several shapes (contract section 8); `rpc_error` reads all of
them. Codes the client treats as "the record is gone" or "the relation is already so" are settings (the
integration's `efficy.error_codes`), because Efficy's real codes are not published (the simulator's are [A]).

A person is reported absent only on positive evidence (a delete in APSIS One may follow): the JSON-RPC read
answers a configured not-found code or an empty master dataset for them, AND a second, differently shaped read
(the connector's records export filtered on their keys) does not list them either. An error's text is never
read as "not found"; a read that does not answer clearly raises, so the change is retried and then reported.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import requests

from efficy_sync.clients.efficy_parsing import EfficyParsing, UncheckedJson
from efficy_sync.clients.efficy_session import SessionCookie
from efficy_sync.clients.errors import (
    AuthError,
    EfficyBusinessError,
    EfficyInconclusive,
    EfficyUnavailable,
    error_class_for,
)
from efficy_sync.clients.http import RetryPolicy, build_session, check_time
from efficy_sync.clients.meter import meter
from efficy_sync.consent import ANSWERED_AT, ASKED_AT, read_time
from efficy_sync.observability import logger  # the PII-scrubbing logger: one logging path
from efficy_sync.pii import redact_text
from efficy_sync.profile_rows import report_unread
from efficy_sync.values import SURROGATE_ESCAPE, address_forms, whole_number, without_surrogates

if TYPE_CHECKING:
    from efficy_sync.config import IntegrationConfig, ProfileRowStatus


class EfficyClient(EfficyParsing):
    """One Efficy Enterprise environment. Not tied to a Lambda: the CLI, workers and benchmarks share it."""

    #: exception codes meaning the contact does not exist (deleted): candidates for absence in get_persons.
    #: Codes only: an error's text ("Field LANGUAGE does not exist") is no evidence that a person is gone.
    not_found_codes: frozenset[str] = frozenset({"RECORD_NOT_FOUND"})
    #: largest ids filter of one confirming read (the connector's page size limit)
    confirm_chunk = 500
    #: "not in that profile" on removal: the wanted state already holds
    relation_missing_codes: frozenset[str] = frozenset({"RELATION_NOT_FOUND"})
    #: signs of an expired server session inside an HTTP 200 answer (contract section 2)
    session_expired_text = re.compile(r"session timeout|please logon|FRMK-2612|CORE-1243", re.IGNORECASE)

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        customer: str | None = None,
        policy: RetryPolicy | None = None,
        profile_detail: str = "Prof",
        api_key_header: str = "X-Efficy-ApiKey",
        rest_api_key_header: str = "X-API-Key",
        session: requests.Session | None = None,
        rest_base_url: str | None = None,
        max_contexts: int = 100,
        not_found_codes: Iterable[str] | None = None,
        relation_missing_codes: Iterable[str] | None = None,
        profile_status: ProfileRowStatus | None = None,
        page_size_param: str = "page_size",
    ) -> None:
        # Efficy's error codes are assumed (not published): an integration's config may correct them.
        if not_found_codes is not None:
            self.not_found_codes = frozenset(not_found_codes)
        if relation_missing_codes is not None:
            self.relation_missing_codes = frozenset(relation_missing_codes)
        root = base_url.rstrip("/")
        # A base URL may already end in /crm (the config example does); Efficy's endpoint is {host}/crm/json.
        self.rpc_url = f"{root}/json" if root.endswith("/crm") else f"{root}/crm/json"
        # [A] the connector REST API sits at the host root, beside /crm
        self.rest_url = (rest_base_url or (root.removesuffix("/crm"))).rstrip("/")
        self.customer = customer
        self.policy = policy or RetryPolicy()
        self.session = session or build_session(self.policy, api="efficy")
        self._cookie = SessionCookie(self.session)  # the EfficySession cookie, forgotten when Efficy ends it
        self.profile_detail = profile_detail
        self.page_size_param = page_size_param
        self.profile_status = profile_status
        self.max_contexts = max_contexts
        self._api_key = api_key
        self._api_key_header = api_key_header
        self._rest_api_key_header = rest_api_key_header
        #: HTTP requests sent, by kind ("rpc", "rest") and by operation ("get_persons", ...), for benchmarks
        self.calls: Counter[str] = Counter()

    @classmethod
    def from_config(
        cls,
        cfg: IntegrationConfig,
        *,
        api_key: str | None = None,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> EfficyClient:
        """The integration's client, with every Efficy setting its config holds (error codes, profile detail,
        customer). The one way the Lambdas, the CLI and the benchmarks build it, so no caller drops a setting.
        `api_key` defaults to the integration's secret (read through the cached Secrets Manager provider)."""
        if api_key is None:
            from efficy_sync.secrets import get_secret

            api_key = get_secret(cfg.efficy.api_key_secret)
        codes = cfg.efficy.error_codes
        return cls(
            cfg.efficy.base_url,
            api_key.strip(),  # a secret put from a file ends in a newline: requests refused the header, always
            customer=cfg.efficy.customer,
            profile_detail=cfg.efficy.profile_detail,
            policy=policy,
            session=session,
            not_found_codes=codes.not_found,
            relation_missing_codes=codes.relation_missing,
            profile_status=cfg.efficy.profile_status,
            page_size_param=cfg.efficy.page_size_param,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> EfficyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- persons ------------------------------------------------------------------------------------------
    def get_persons(self, keys: Iterable[int], fields: list[str] | None = None) -> dict[int, dict[str, Any]]:
        """Full current state of these persons, with their CRM profiles, in as few POSTs as Efficy allows.
        Each record also says when it was asked for and answered (consent.ASKED_AT, ANSWERED_AT).

        Keys left out are persons Efficy proved gone (the caller may treat them as deleted): a not-found code or
        an empty record in the JSON-RPC answer, confirmed by the connector export (`confirm_absent`). Any other
        error raises, whatever its text says.
        """
        wanted = list(dict.fromkeys(int(k) for k in keys))
        persons: dict[int, dict[str, Any]] = {}
        missing: list[int] = []
        for start in range(0, len(wanted), self.max_contexts):
            chunk = wanted[start : start + self.max_contexts]
            asked = read_time()
            answers = self._rpc("get_persons", [self._consult_context(key, fields) for key in chunk])
            read = {ASKED_AT: asked, ANSWERED_AT: read_time()}
            for key, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, EfficyBusinessError):
                    if answer.code is not None and answer.code in self.not_found_codes:
                        missing.append(key)
                        continue
                    raise answer
                person = self._person_from_consult(answer, key)
                if person is None:
                    missing.append(key)
                else:
                    persons[key] = {**person, **read}
        report_unread(persons.values())
        if missing:
            self.confirm_absent(missing)
        return persons

    def confirm_absent(self, keys: list[int]) -> None:
        """The second read behind every "this person is gone": the connector's records export, filtered on
        these keys, must answer a records list that holds none of them. Raises EfficyInconclusive when it lists
        one (the two reads disagree) or lists a key we did not ask for (the filter was ignored, so the answer
        proves nothing); its own errors propagate. Either way nothing is treated as deleted."""
        for start in range(0, len(keys), self.confirm_chunk):
            chunk = keys[start : start + self.confirm_chunk]
            records = self.list_persons_page(0, len(chunk), ["K_CONTACT"], include_profiles=False, ids=chunk)
            listed = {int(r["K_CONTACT"]) for r in records}
            if listed - set(chunk):
                raise EfficyInconclusive("Efficy's records export ignored the ids filter: absence not confirmed")
            if listed:
                raise EfficyInconclusive(
                    f"Efficy's JSON-RPC read reported {len(listed)} person(s) missing that its records export "
                    "still lists: not treated as deleted"
                )

    def list_persons_page(
        self,
        page: int,
        page_size: int,
        fields: list[str] | None = None,
        include_profiles: bool = True,
        *,
        ids: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """One page of the connector export (pages from 0, ordered by K_CONTACT); an empty page is the end.
        Each record also says when it was asked for and answered (consent.ASKED_AT, ANSWERED_AT)."""
        params: dict[str, Any] = {"page": page, self.page_size_param: page_size}
        if fields:
            params["fields"] = ",".join(fields)
        if include_profiles:
            params["include"] = "profiles"
        if ids:
            params["ids"] = ",".join(str(int(i)) for i in ids)
        asked = read_time()
        payload = self._rest_get("list_persons_page", "/v1/records/contacts", params)
        read = {ASKED_AT: asked, ANSWERED_AT: read_time()}
        # a bare list is a records page too: APSIS's own generic-connector code reads one (contract §4)
        payload = {"records": payload} if isinstance(payload, list) else payload
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            raise EfficyBusinessError("records page without a records list", code="INVALID_RESPONSE")
        if self.page_error(payload):  # an answer that also reports an error says nothing about who exists
            raise EfficyBusinessError("records page that reports an error", code="INVALID_RESPONSE")
        if len(records) > page_size:  # pages of its own size: every page would read another range than planned
            raise EfficyBusinessError(
                f"Efficy's records export answered {len(records)} persons for a page of {page_size}: it does not "
                f"read the page size as {self.page_size_param!r}; set efficy.page_size_param to the other spelling",
                code="PAGE_SIZE_IGNORED",
            )
        total = whole_number(payload.get("total"))
        if ids and total is not None and total > len(records):
            # asked for these keys only: a total above what it lists contradicts itself (confirm_absent)
            raise EfficyInconclusive(
                f"Efficy's records export counts {total} of the persons asked but lists {len(records)}"
            )
        persons = [{**self._person_from_record(record), **read} for record in records]
        report_unread(persons)
        return persons

    # ---- CRM profiles (consent) ---------------------------------------------------------------------------
    def remove_from_profile(self, key: int, profile_id: int) -> None:
        """Take the person out of the CRM profile; not being a member is fine (the opt-out already holds)."""
        self._change_profile("remove_from_profile", key, profile_id, "deleteDetail", self.relation_missing_codes)

    def _change_profile(self, op: str, key: int, profile_id: int, func: str, already: frozenset[str]) -> None:
        context = self._edit_context(key, [{"@name": func, "detail": self.profile_detail, "detailkey": profile_id}])
        (answer,) = self._rpc(op, [context])
        if isinstance(answer, EfficyBusinessError) and answer.code not in already:
            raise answer

    # ---- queries and look-ups -----------------------------------------------------------------------------
    def run_query(self, query_id: int) -> list[int]:
        """K_CONTACTs of a saved query's rows (all rows: recordcount 0)."""
        func = {"@name": "query", "key": int(query_id), "recordcount": 0}
        return self._contact_keys(self._api_call("run_query", func))

    def find_contacts_by_email(self, email: str) -> list[int]:
        """Contacts with this address in any e-mail field. An internationalised domain is looked up in both its
        forms: we send APSIS the ASCII one (values.to_email), a CRM user types the other."""
        keys: list[int] = []
        for form in address_forms(email):
            func = {"@name": "contactidsfromemailaddresses", "recipients": form}
            keys += [k for k in self._contact_keys(self._api_call("find_contacts_by_email", func)) if k not in keys]
        return keys

    def list_fields(self) -> list[dict[str, Any]]:
        """Contact fields as the connector schema lists them: name, type, label."""
        return self._rest_list("list_fields", "/v1/schema/contacts")

    def list_profiles(self) -> list[dict[str, Any]]:
        """CRM profile definitions: id, name."""
        return self._rest_list("list_profiles", "/v1/profiles")

    def list_queries(self) -> list[dict[str, Any]]:
        """Saved queries offered as profile lists: id, name, type."""
        return self._rest_list("list_queries", "/v1/profile-lists")

    # ---- request building ---------------------------------------------------------------------------------
    def _consult_context(self, key: int, fields: list[str] | None) -> dict[str, Any]:
        master: dict[str, Any] = {"@name": "master"}
        if fields:
            master["fields"] = list(fields)  # [A] simulator extension; a real server returns every column
        return {
            "#id": f"consult-{key}",
            "@name": "consult",
            "entity": "Cont",
            "key": key,
            "closecontext": True,
            "@func": [master, {"@name": "detail", "detail": self.profile_detail}],
        }

    # ---- authentication -----------------------------------------------------------------------------------
    def _auth_headers(self, kind: str) -> dict[str, str]:
        """The API key, and on a server that hosts several customers the customer alias on every call, REST
        included: a connector read answered for another customer (or the server's default one) would show our
        persons as absent, which confirms deletions, and theirs as ours."""
        headers = {self._rest_api_key_header if kind == "rest" else self._api_key_header: self._api_key}
        if self.customer:
            headers["X-Efficy-Customer"] = self.customer
        return headers

    # ---- transport ----------------------------------------------------------------------------------------
    def _send(
        self,
        kind: str,
        op: str,
        method: str,
        url: str,
        *,
        body: UncheckedJson = None,
        params: dict[str, Any] | None = None,
    ) -> requests.Response:
        """One logical call. The session adapter retries 429/5xx/timeouts; a 401 gets one fresh session."""
        headers = {**self._auth_headers(kind), "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            # Efficy 12.1 mangles bodies sent without Content-Length: always state it
            headers.update({"Content-Type": "application/json", "Content-Length": str(len(data))})
        for attempt in (1, 2):
            left = check_time(f"Efficy {op}")
            self.calls[kind] += 1
            self.calls[op] += 1
            try:
                response = self.session.request(
                    method, url, data=data, headers=headers, params=params, timeout=self.policy.timeout_within(left)
                )
            except requests.RequestException as exc:
                meter.record_unanswered("efficy", self.policy.total + 1)
                raise EfficyUnavailable(f"Efficy did not answer {op}: {type(exc).__name__}") from exc
            meter.record("efficy", response)
            logger.debug("efficy %s %s -> %s", kind, op, response.status_code)
            if response.status_code != 401 or attempt == 2:
                break
            response.close()
            self._cookie.drop(response)  # that call's cookie only: the threads share it (efficy_session.py)
        self._check_status(response, op)
        return response

    def _check_status(self, response: requests.Response, op: str) -> None:
        status = response.status_code
        if status < 400:
            return
        message = f"Efficy answered {status} to {op}{self._error_text(response)}"
        # Efficy refusing one of our requests says nothing about a person's data (see errors.about_person)
        raise error_class_for(status, EfficyUnavailable)(message, status=status, about_person=False)

    @staticmethod
    def _error_text(response: requests.Response) -> str:
        """The REST error message, if the body is the connector's JSON error; proxies send HTML pages instead."""
        if "json" not in response.headers.get("Content-Type", ""):
            return ""
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            return ""
        if not isinstance(error, dict):
            return ""
        # the message can quote the value Efficy refused; it is stored and shown, not only logged
        text = f"{error.get('code')}: {error.get('message')}"
        return f": {redact_text(text)}"

    @staticmethod
    def _json(response: requests.Response, op: str) -> UncheckedJson:
        """The answer's JSON (its bytes read as `body_text` says). A 200 that is not JSON
        (a maintenance or sign-in page in front of Efficy, a body cut short) is an outage, retried: typed as
        Efficy's business error, the state machine did not retry it and a full-sync page failed at once."""
        try:
            answer = json.loads(EfficyParsing.body_text(response.content, response.headers.get("Content-Type")))
            # a value cut inside an emoji (values.without_surrogates): walked only when the body escapes one
            return without_surrogates(answer) if SURROGATE_ESCAPE.search(response.content) else answer
        except (ValueError, UnicodeDecodeError, RecursionError):
            kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
            raise EfficyUnavailable(
                f"Efficy's answer to {op} is not JSON ({response.status_code}, {kind})", status=response.status_code
            ) from None

    # ---- JSON-RPC parsing ---------------------------------------------------------------------------------
    def _rpc(self, op: str, contexts: list[dict[str, Any]]) -> list[dict[str, Any] | EfficyBusinessError]:
        """Post contexts in one call; per context, its answer or the business error Efficy put in its place."""
        payload = self._post_rpc(op, contexts)
        whole = self.rpc_error(payload) if isinstance(payload, dict) else None
        if whole is not None:
            # Efficy may put a context's error at the top, not in the array (contract section 8). One context:
            # it is that context's answer, so its codes are read as in the array ("relation missing" on a
            # removal, "not found" on a read). Several: it names none of them, so it fails them all (the worker
            # then reads each person alone, where it can be told apart).
            if len(contexts) == 1:
                return [self._business_error(op, whole)]
            raise self._business_error(op, whole)
        if not isinstance(payload, list):
            raise EfficyBusinessError(f"Efficy's answer to {op} is not an array", code="INVALID_RESPONSE")
        by_id = {el["#id"]: el for el in payload if isinstance(el, dict) and "#id" in el}
        answers: list[dict[str, Any] | EfficyBusinessError] = []
        for index, context in enumerate(contexts):
            element = by_id.get(context["#id"])
            positional = payload[index] if len(payload) == len(contexts) else None
            if element is None and isinstance(positional, dict) and "#id" not in positional:
                element = positional  # an exception without #id stands in its context's place
            if element is None:
                stray = next((e for e in map(self.rpc_error, payload) if e is not None), None)
                raise self._business_error(op, stray or ("MISSING_CONTEXT", f"no answer for {context['#id']}"))
            error = self.rpc_error(element)
            answers.append(self._business_error(op, error) if error else element)
        return answers

    def _post_rpc(self, op: str, contexts: list[dict[str, Any]]) -> UncheckedJson:
        params = {"customer": self.customer} if self.customer else None
        for attempt in (1, 2):
            response = self._send("rpc", op, "POST", self.rpc_url, body=contexts, params=params)
            payload = self._json(response, op)
            if not self._session_expired(payload):
                return payload
            if attempt == 1:
                self._cookie.drop(response)
        raise AuthError(f"Efficy session expired again during {op}")

    def _session_expired(self, payload: UncheckedJson) -> bool:
        elements = payload if isinstance(payload, list) else [payload]
        for element in elements:
            error = self.rpc_error(element)
            if error and self.session_expired_text.search(f"{error[0]} {error[1]}"):
                return True
        return False

    def _api_call(self, op: str, func: dict[str, Any]) -> dict[str, Any]:
        (answer,) = self._rpc(op, [self._api_context(func)])
        if isinstance(answer, EfficyBusinessError):
            raise answer
        return answer

    # ---- shaping persons ----------------------------------------------------------------------------------

    # ---- REST ---------------------------------------------------------------------------------------------
    def _rest_get(self, op: str, path: str, params: dict[str, Any] | None = None) -> UncheckedJson:
        return self._json(self._send("rest", op, "GET", f"{self.rest_url}{path}", params=params), op)

    def _rest_list(self, op: str, path: str) -> list[dict[str, Any]]:
        payload = self._rest_get(op, path)
        if not isinstance(payload, list):
            raise EfficyBusinessError(f"Efficy's answer to {op} is not a list", code="INVALID_RESPONSE")
        return payload
