"""The `efficy:` part of an integration config: where the CRM is, how its webhook proves itself, and the facts
about Efficy we could not confirm (contracts/efficy.md), each a setting with our best guess as the default."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from efficy_sync.values import as_text

from .base import _HEADER, _efficy_field, _Model, _secret_name, _url
from .problems import _check_pattern, _reject


class EfficyAuth(_Model):
    """How the Efficy webhook proves it is Efficy (webhook_auth.py explains each mode; header names are settings
    because Efficy does not publish them).

    `url_token`: the webhook secret as the `token` query parameter of the registered URL (Efficy's SYS_WEBHOOKS
    calls are unsigned); `hmac_body`: `sha256=<hex HMAC-SHA256(secret, raw body)>` in `signature_header`
    (default `X-Justin-Signature`, the 12.1 generic connector); `hmac`: our timestamped scheme; `header`: a
    static secret header."""

    mode: Literal["url_token", "hmac_body", "hmac", "header"] = "hmac"
    signature_header: str = "X-Efficy-Signature"
    timestamp_header: str = "X-Efficy-Timestamp"
    secret_header: str = "X-Efficy-Webhook-Secret"
    tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    #: the status of a webhook accepted and queued: 202 with `{"accepted": n, ...}` (DESIGN's interface), or 204
    #: with no body for the generic-connector sender, which counts only a 204 as delivered (any other 2xx is
    #: logged there as failed; the change is queued all the same). ASSUMED for Efficy's 12.1 connector.
    accepted_status: Literal[202, 204] = 202

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        """`hmac_body` signs in another header than `hmac` by default: the one the 12.1 connector uses."""
        if isinstance(data, dict) and data.get("mode") == "hmac_body" and "signature_header" not in data:
            return {**data, "signature_header": "X-Justin-Signature"}
        return data

    @field_validator("signature_header", "timestamp_header", "secret_header")
    @classmethod
    def _header(cls, value: Any) -> str:
        return _check_pattern(value, _HEADER, "an HTTP header name (letters, digits and '-')")


class EfficyErrorCodes(_Model):
    """Efficy's business-error codes the sync acts on. ASSUMED: Efficy does not publish its codes, so each
    list is a setting to correct against a real instance (the codes show in `explain` and in the logs)."""

    not_found: list[str] = Field(default_factory=lambda: ["RECORD_NOT_FOUND"], min_length=1)
    relation_missing: list[str] = Field(default_factory=lambda: ["RELATION_NOT_FOUND"], min_length=1)
    #: read by nothing since the client stopped adding persons to CRM profiles; accepted so stored configs load
    relation_exists: list[str] = Field(default_factory=lambda: ["LINK_EXISTS"], min_length=1)


def _status_values(value: Any) -> list[str]:
    """Values compared as Efficy sends them, trimmed and in any case; "" stands for empty (the zero date too)."""
    if not isinstance(value, list) or not all(isinstance(v, str | int | bool) for v in value):
        _reject(value, "a list of texts such as ['opt-in', '1'] ('' stands for an empty value)")
    return [as_text(v).strip().casefold() for v in value]


class ProfileRowStatus(_Model):
    """Whether a person's CRM-profile row says in or out (efficy_sync.profile_rows explains the reading).
    ASSUMED: Efficy does not publish whether a profile row carries an opt-in/opt-out status. `field: null`
    reads a row as a membership, unless it carries a status-like column; set `field` to that column."""

    field: Annotated[str | None, BeforeValidator(lambda v: v if v is None else _efficy_field(v))] = None
    member: Annotated[list[str], BeforeValidator(_status_values)] = Field(
        default_factory=lambda: ["opt-in", "optin", "subscribed", "1", "yes", "true"], min_length=1
    )
    not_member: Annotated[list[str], BeforeValidator(_status_values)] = Field(
        default_factory=lambda: ["opt-out", "optout", "unsubscribed", "0", "no", "false"], min_length=1
    )
    #: "not_member": any value not listed in `member` means the person left (a date column such as D_OPTOUT)
    other_values: Literal["unknown", "not_member"] = "unknown"

    @model_validator(mode="after")
    def _disjoint(self) -> ProfileRowStatus:
        both = sorted(set(self.member) & set(self.not_member))
        if both:
            _reject(both, "values listed in member or in not_member, not in both")
        return self

    @cached_property
    def member_values(self) -> frozenset[str]:
        return frozenset(self.member)

    @cached_property
    def not_member_values(self) -> frozenset[str]:
        return frozenset(self.not_member)


#: Efficy's table id of Cont (webhook.CONTACT_TABLE_ID): a relation table is another one
_CONTACT_TABLE = 11000


class RelationTable(_Model):
    """A table whose webhook records name a relation of a person, such as joining or leaving a CRM profile.
    ASSUMED: whether Efficy announces a change of a contact's CRM profiles on the contact's own record or on a
    relation table, and that table's id and key, are not documented (contracts/efficy.md §5, §7). A record of
    it only makes the person it names be read again, as a contact update: never a deletion or a consent on its
    own. The contact's key is taken from the record's changed values (`contact_field`), else from the part
    `key_part` of a composite key such as "123_12"; a record giving neither is counted and logged
    (`WebhookRelationsUnread`), and the next full sync catches the change up."""

    table: int = Field(gt=0)
    contact_field: Annotated[str, BeforeValidator(_efficy_field)] = "K_CONTACT"
    key_part: Literal["none", "first", "last"] = "none"

    @field_validator("table")
    @classmethod
    def _not_the_contact_table(cls, value: int) -> int:
        if value == _CONTACT_TABLE:
            _reject(value, "a table id other than 11000 (Cont: its records are contact changes already)")
        return value


class EfficySettings(_Model):
    base_url: str
    api_key_secret: str
    webhook_secret_secret: str
    customer: str | None = None
    auth: EfficyAuth = EfficyAuth()
    profile_detail: str = "Prof"  # ASSUMED name of the person's CRM-profile detail
    profile_status: ProfileRowStatus = ProfileRowStatus()
    page_size: int = Field(default=500, ge=1, le=500)
    #: ASSUMED spelling of the records export's page-size parameter (contract §4: "pageSize/page_size"); a
    #: server that reads the other one answers pages of its own size, which the client refuses (PAGE_SIZE_IGNORED)
    page_size_param: Literal["page_size", "pageSize"] = "page_size"
    error_codes: EfficyErrorCodes = EfficyErrorCodes()
    relation_tables: list[RelationTable] = []

    @field_validator("relation_tables")
    @classmethod
    def _one_rule_per_table(cls, value: list[RelationTable]) -> list[RelationTable]:
        tables = [rule.table for rule in value]
        if len(set(tables)) < len(tables):
            _reject(tables, "each table id once")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: Any) -> str:
        return _url(value)

    @field_validator("api_key_secret", "webhook_secret_secret")
    @classmethod
    def _check_secret(cls, value: Any) -> str:
        return _secret_name(value)
