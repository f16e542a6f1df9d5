"""APSIS One client: the calls the sync makes (definitions, profiles, consents, bulk import).

Facts behind it are in contracts/apsis-one.md. Authentication, transport and the typed errors live in its base,
clients/apsis_transport.py (`ApsisTransport`), with the import calls in clients/apsis_imports.py: this module
only says which call does what. Which success answers prove a write applied: clients/apsis_answers.py.

One client serves one integration: one section and the keyspace its profile keys live in. Safe to share
between threads (the token cache is locked; requests' Session is used for independent calls).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import requests

from efficy_sync.clients.apsis_answers import PartlyApplied, check_applied, unproven_write
from efficy_sync.clients.apsis_imports import MAX_IMPORT_FILE_BYTES, ApsisImports
from efficy_sync.clients.apsis_transport import TokenStore, _redact
from efficy_sync.clients.consent_entries import CHANNEL_NAMES, CHANNELS, consent_entry
from efficy_sync.clients.errors import (
    ApsisUnavailable,
    Conflict,
    ConsentRefused,
    MappingGone,
    NotFound,
    PayloadTooLarge,
    RejectedValue,
    TransientError,
)
from efficy_sync.clients.http import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from efficy_sync.config import IntegrationConfig

__all__ = ["CHANNELS", "DEFAULT_PROFILE_TAGS_PATH", "MAX_IMPORT_FILE_BYTES", "ApsisClient", "_redact"]

CONSENT_TYPES = ("opt-in", "opt-out")
#: what APSIS may already hold when it answers 409 to a consent we send, for that 409 to mean "no change": an
#: opt-in is in place when the profile has any form of it; an opt-out only when it has the opt-out itself
SAME_CONSENT = {
    "opt-in": frozenset({"opt-in", "confirmed-opt-in", "pending-opt-in"}),
    "opt-out": frozenset({"opt-out"}),
}
#: held types an opt-out replaces as APSIS documents it: a 409 to one is no refusal of the transition
OPTED_IN = frozenset({"opt-in", "confirmed-opt-in"})
MERGE_PATCH = "application/merge-patch+json"

#: ASSUMED path of the profile-tags call (see patch_tags)
DEFAULT_PROFILE_TAGS_PATH = "/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/tags"


def _answered(exc: NotFound) -> None:
    """A 404 read as "no such profile" must be APSIS's own answer; one from a proxy or a wrong path (an HTML, XML
    or empty body) is no such evidence: an outage here (retried, never acknowledged)."""
    if not exc.answered:
        message = f"{exc} (not APSIS One's answer: check apsis.base_url and the paths)"
        raise ApsisUnavailable(message, status=exc.status, detail=message) from exc


class ConsentConflict(TransientError):
    """APSIS One answered 409 to an opt-out while the profile, read back, holds an opt-in, a transition it
    supports: no verdict on the person (a concurrent change). Acknowledged, the CRM opt-out waited for the next
    change or full sync; so it is retried, then the DLQ. (Outside errors.py: the handlers hand it to the state
    machine as a TransientError, errors.retry_as.)"""

    category = "consent_conflict"


class ApsisClient(ApsisImports):
    """Calls APSIS One for one integration (section + keyspace). Raises the errors of clients/errors.py."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        section: str,
        keyspace: str = "com.apsis1.keyspaces.crm-id",
        policy: RetryPolicy | None = None,
        token_refresh_margin: float = 3600,
        session: requests.Session | None = None,
        profile_tags_path: str = DEFAULT_PROFILE_TAGS_PATH,
        clock: Callable[[], float] = time.time,
        token_store: TokenStore | None = None,
    ) -> None:
        super().__init__(
            base_url,
            client_id,
            client_secret,
            policy=policy,
            token_refresh_margin=token_refresh_margin,
            session=session,
            clock=clock,
            token_store=token_store,
        )
        self.client_id = client_id  # names the account in its shared request budget (budget.account_key)
        self.profile_tags_path = profile_tags_path
        self.section = section
        self.keyspace = keyspace
        self._versions: dict[str, str] | None = None  # attribute discriminator -> live version id (v1 writes)
        self._versions_lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        cfg: IntegrationConfig,
        *,
        credentials: dict[str, Any] | None = None,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        token_store: TokenStore | None = None,
    ) -> ApsisClient:
        """The integration's client with every APSIS setting its config holds (section, keyspace, tags path).
        The one way the Lambdas, the CLI and the benchmarks build it. `credentials` ({"client_id",
        "client_secret"}) default to the integration's secret (cached Secrets Manager provider)."""
        if credentials is None:
            from efficy_sync.secrets import get_json_secret

            credentials = get_json_secret(cfg.apsis.credentials_secret)
        try:
            client_id, client_secret = str(credentials["client_id"]).strip(), str(credentials["client_secret"]).strip()
        except (KeyError, TypeError):
            raise ValueError(f"secret {cfg.apsis.credentials_secret} needs client_id and client_secret") from None
        return cls(
            cfg.apsis.base_url,
            client_id,
            client_secret,
            section=cfg.apsis.section,
            keyspace=cfg.apsis.keyspace,
            policy=policy,
            session=session,
            profile_tags_path=cfg.apsis.profile_tags_path,
            token_store=token_store,
        )

    # ---- definitions ----------------------------------------------------------------------------------
    def list_sections(self) -> list[dict[str, Any]]:
        return self._items("list_sections", "/audience/sections", whole=True)

    def list_keyspaces(self) -> list[dict[str, Any]]:
        return self._items("list_keyspaces", "/audience/keyspaces", whole=True)

    def list_attributes(self, *, whole: bool = True) -> list[dict[str, Any]]:  # a page is no list of what is gone
        return self._items("list_attributes", f"/audience/sections/{self._q(self.section)}/attributes", whole=whole)

    def list_topics(self) -> list[dict[str, Any]]:
        return self._items("list_topics", f"/v2/audience/sections/{self._q(self.section)}/topics", whole=True)

    def list_tags(self) -> list[dict[str, Any]]:
        """ASSUMED path (the public docs name a "get all tags" call but not its URL)."""
        return self._items("list_tags", f"/audience/sections/{self._q(self.section)}/tags", whole=True)

    def live_attribute_versions(self) -> dict[str, str]:
        """Attribute discriminator -> live version id, which imports and v1 writes need."""
        versions: dict[str, str] = {}  # a page of them will do: one without a version takes the two-call way
        for attribute in self.list_attributes(whole=False):
            for version in attribute.get("versions") or []:  # null: no version, as when absent
                if version.get("deprecated_at") is None:
                    versions[attribute["discriminator"]] = version["id"]
        return versions

    # ---- profiles -------------------------------------------------------------------------------------
    def create_profile(self, key: str) -> bool:
        """True when created (201, or 200/202: accepted, taken as done), False when it already existed (409).
        A 207 or a body listing errors: PartlyApplied (the profile may exist: marked so, never read as absent)."""
        path = f"/audience/keyspaces/{self._q(self.keyspace)}/sections/{self._q(self.section)}/profiles"
        try:
            response = self._call("create_profile", "POST", path, body={"profile_key": str(key)})
        except Conflict:
            return False
        check_applied(response, "create_profile")
        return True

    def patch_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        """v2 merge-patch by discriminator; None clears. Raises NotFound when the profile does not exist, and
        MappingGone when APSIS refuses it because the section no longer defines a mapped attribute.
        Answers (clients/apsis_answers.py): 200/204 applied; 202 accepted, taken as applied (documented success,
        idempotent); 207 or a body listing errors: PartlyApplied, so the values are not recorded as sent (marked
        unknown: sent again by the next sync; the outcome says why), and never read as "no such profile"."""
        path = f"/v2{self._profile_path(key)}/sections/{self._q(self.section)}/attributes"
        try:
            response = self._call("patch_attributes", "PATCH", path, body=attributes, content_type=MERGE_PATCH)
        except NotFound as exc:
            _answered(exc)  # "no such profile, create it" only on APSIS's own word
            raise
        except RejectedValue as exc:
            self._raise_if_gone(exc, "attribute", attributes, self.list_attributes)
            raise
        check_applied(response, "patch_attributes")  # outside the try: a 207 is no refusal to judge

    def _raise_if_gone(
        self, error: RejectedValue, kind: str, names: Any, definitions: Callable[[], list[dict[str, Any]]]
    ) -> None:
        """After a refusal (400), ask APSIS what the section defines: a mapped `kind` it no longer has makes the
        refusal the integration's (MappingGone), on the evidence of that documented list, never on the error's
        text. The list's own failure leaves the refusal as it was. A refusal too large to judge (413) is left."""
        if isinstance(error, PayloadTooLarge):
            return
        try:
            items = definitions()
        except Exception:  # no evidence either way: the original refusal stands
            return
        # evidence only from a readable list: non-empty, every item named (not every mapped name gone on a shape)
        if not items or not all(isinstance(item.get("discriminator"), str) for item in items):
            return
        defined = {item["discriminator"] for item in items}
        gone = sorted({str(name) for name in names} - defined)
        if gone:
            raise MappingGone(
                f"APSIS One's section {self.section} no longer defines the mapped {kind}(s) {gone}: every person "
                "would be refused alike; fix the mapping (or the section) and redrive",
                status=error.status,
                detail=error.detail,
            ) from error

    def upsert_attributes(self, key: str, attributes: dict[str, Any]) -> bool:
        """Patch, creating the profile first when it is missing. True when this call created it.

        Patching first costs one call for the common case (the person exists); a new person costs three.
        """
        try:
            self.patch_attributes(key, attributes)
            return False
        except NotFound:
            created = self.create_profile(key)
        self.patch_attributes(key, attributes)
        return created

    def create_with_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        """One call where the plan says create + attribute PATCH: the v1 attribute PATCH (keys are attribute
        *version ids*), which creates a missing profile (contracts/apsis-one.md section 3, sure: H). An attribute
        without a live version goes the two-call way (create, then v2 PATCH), so APSIS judges it as before.

        The version ids are listed once per client; when APSIS refuses the body they are listed again and, if
        they changed (an attribute got a new version), the call is made once more with the new ids. A 207 (or a
        body listing errors) is PartlyApplied as for patch_attributes: the profile may exist, the values unproven.
        A 202 is taken as done (creation and values accepted)."""
        versions = self._attribute_versions(refresh=False)
        if any(name not in versions for name in attributes):
            self.create_profile(key)
            self.patch_attributes(key, attributes)
            return
        try:
            self._patch_v1(key, {versions[name]: value for name, value in attributes.items()})
        except PartlyApplied:
            raise  # not a refusal of the version ids: never sent again with other ones
        except RejectedValue as exc:
            fresh = self._attribute_versions(refresh=True)
            if all(fresh.get(name) == versions[name] for name in attributes):
                raise
            # deleted from the section since listed: the integration's failure (MappingGone), not the person's
            self._raise_if_gone(exc, "attribute", attributes, self.list_attributes)
            self.create_with_attributes(key, attributes)

    def _patch_v1(self, key: str, body: dict[str, Any]) -> None:
        path = f"{self._profile_path(key)}/sections/{self._q(self.section)}/attributes"
        response = self._call("create_with_attributes", "PATCH", path, body=body, content_type=MERGE_PATCH)
        check_applied(response, "create_with_attributes")

    def _attribute_versions(self, *, refresh: bool) -> dict[str, str]:
        held = self._versions  # read without the lock: it is only ever replaced whole, never changed in place,
        if held is not None and not refresh:  # and a page's 16 threads ask before every attribute PATCH
            return held
        with self._versions_lock:
            if self._versions is None or refresh:
                self._versions = self.live_attribute_versions()
            return self._versions

    def delete_profile(self, key: str) -> bool:
        """Permanent, with consents and events. False when the profile was already gone. A 202 is taken as done
        (accepted: APSIS deletes in the background; sent again it is idempotent). A 207 or a body listing errors
        is no proof: ApsisUnavailable (maybe_applied), retried; the profile is still taken to exist."""
        try:
            response = self._call("delete_profile", "DELETE", self._profile_path(key))
        except NotFound as exc:
            _answered(exc)  # a proxy's 404 is no proof the delete is done
            return False
        check_applied(response, "delete_profile", error=ApsisUnavailable)
        return True

    def patch_tags(self, key: str, tags: dict[str, bool]) -> None:
        """ASSUMED endpoint: merge-patch {tag: true|false} on the profile's section tags (real path not found;
        `apsis.profile_tags_path` in the integration's config corrects it). Answers as for patch_attributes: 202
        taken as applied; 207 or a body listing errors: PartlyApplied, the tags not recorded as sent (unknown)."""
        path = self.profile_tags_path.format(
            keyspace=self._q(self.keyspace), key=self._q(key), section=self._q(self.section)
        )
        try:
            response = self._call("patch_tags", "PATCH", path, body=tags, content_type=MERGE_PATCH)
        except RejectedValue as exc:
            self._raise_if_gone(exc, "tag", tags, self.list_tags)
            raise
        check_applied(response, "patch_tags")

    # ---- consents -------------------------------------------------------------------------------------
    def set_consent(
        self,
        key: str,
        topic: str,
        channel: str,
        consent_type: str,
        *,
        reason: str = "efficy-sync",
        source: str = "Efficy",
    ) -> str:
        """Returns "created" (201), "updated" (204) or "unchanged" (any other 2xx or a 409 while the profile holds
        that type: a 200 says "no change", a 202 or 207 no more). APSIS answers 409 to any transition it does not
        support (contracts/apsis-one.md §3: e.g. pending-opt-in -> opt-out), so a 409 is "unchanged" only once the
        profile's consents show the requested type; otherwise ConsentRefused: the person's failure, never recorded
        as sent (planned again by the next sync), `maybe_applied` after a 202 or 207, or a 201 whose body lists
        errors (APSIS may apply it yet: the slot is stored unknown). Except an opt-out while the profile holds an opt-in, which APSIS supports:
        ConsentConflict, retried (a CRM opt-out must not wait for the person's next change)."""
        if consent_type not in CONSENT_TYPES:
            raise ValueError(f"consent_type must be one of {CONSENT_TYPES}, not {consent_type!r}")
        body = {
            "topic_discriminator": topic,
            "channel_discriminator": self._channel(channel),
            "type": consent_type,
            "reason": reason,
            "source": source,
        }
        try:
            response = self._call("set_consent", "POST", self._consents_path(key), body=body)
            # 200 "no change" (HC-CONS), 202 not yet, 207 in part; a 201 whose body lists errors proves nothing
            # either (clients/apsis_answers.py): an opt-out recorded as sent on it and not held would be mailed
            if response.status_code not in (201, 204) or unproven_write(response, "set_consent"):
                raise Conflict(f"APSIS set_consent: {response.status_code}, unproven", status=response.status_code)
        except Conflict as conflict:
            held = self._consent_held(key, topic, body["channel_discriminator"])
            if held in SAME_CONSENT[consent_type]:
                return "unchanged"
            if consent_type == "opt-out" and held in OPTED_IN:  # a transition APSIS supports: no verdict
                raise ConsentConflict(
                    f"APSIS One answered 409 to opt-out on {topic} ({channel}) while the profile holds {held}",
                    status=conflict.status,
                    detail=conflict.detail,
                ) from None
            refused = ConsentRefused(
                f"APSIS One refused {consent_type} on {topic} ({channel}): the profile holds {held or 'no consent'}",
                status=conflict.status,
                detail=conflict.detail,
            )
            # accepted (or said done with errors listed): APSIS may apply it yet (send.py stores the slot unknown)
            refused.maybe_applied = conflict.status in (201, 202, 204, 207)
            raise refused from None
        except RejectedValue as exc:
            self._raise_if_gone(exc, "subscription", [topic], self.list_topics)
            raise
        return {201: "created", 204: "updated"}.get(response.status_code, "unchanged")

    def _consent_held(self, key: str, topic: str, channel_discriminator: str) -> str | None:
        """The consent type the profile holds on (topic, channel) as APSIS reads it back (None: none). An entry
        we cannot read raises (consent_entries.consent_entry): never "none", nor a type it does not say."""
        wanted = (topic, CHANNEL_NAMES.get(channel_discriminator, channel_discriminator))
        for item in self.get_consents(key):
            (slot, kind) = consent_entry(item)
            if slot == wanted:
                return kind
        return None

    def get_consents(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]]:
        """The profile's consents (`items`). An answer without them, or one page of several, is unreadable: read
        as "no consents", a first opt-in overwrote an opt-out APSIS held (existing_optouts.py)."""
        params = {"consent_types": consent_types} if consent_types else None
        return self._items("get_consents", self._consents_path(key), params=params, whole=True)

    def consents_if_profile(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]] | None:
        """The profile's consents, or None when APSIS answers that the profile does not exist. A 404 that is not
        APSIS's own answer (a proxy's or a gateway's page) is no such evidence: read as "no profile", a first
        opt-in went out unread over an opt-out APSIS held, so it is an outage here (retried, never acknowledged)."""
        try:
            return self.get_consents(key, consent_types)
        except NotFound as exc:
            _answered(exc)
            return None

    # ---- paths ----------------------------------------------------------------------------------------
    @staticmethod
    def _channel(channel: str) -> str:
        if channel in CHANNELS:
            return CHANNELS[channel]
        if channel in CHANNELS.values():
            return channel
        raise ValueError(f"channel must be 'email' or 'sms', not {channel!r}")

    def _profile_path(self, key: str) -> str:
        return f"/audience/keyspaces/{self._q(self.keyspace)}/profiles/{self._q(key)}"

    def _consents_path(self, key: str) -> str:
        return f"/v2{self._profile_path(key)}/sections/{self._q(self.section)}/consents"
