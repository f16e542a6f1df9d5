"""The integration config model (DESIGN §5): what the Lambdas load on their cold path, and nothing else.

Reading YAML with line numbers (`loading`), remote references (`references`) and version diffs (`history`)
live beside it so a handler never imports them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from efficy_sync.values import ValueType, as_text

from .base import _CRON, _DISCRIMINATOR, _HEADER, _RATE, _SLUG, _TAG, _efficy_field, _Model, _secret_name, _url
from .checks import cross_check
from .efficy import EfficySettings
from .names import EMAIL_FIELD, KEY_FIELD, OPERATORS, RESERVED_ATTRIBUTES
from .problems import _check_pattern, _reject


def _known_zone(name: str) -> bool:
    """UTC, "unknown", or a zone the time zone database has. Where the runtime has no database at all (a Lambda
    image without one) a well-formed name is taken: the route then reads such times as "unknown", the safe way
    (optout_time.naive_zone), rather than refuse the whole integration's config."""
    if name.upper() == "UTC" or name == "unknown":  # optout_time.UNKNOWN_ZONE
        return True
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", name):
        return False
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return not available_timezones()
    return True


class ApsisSettings(_Model):
    base_url: str
    section: str
    keyspace: str = "com.apsis1.keyspaces.crm-id"
    credentials_secret: str
    optout_token_secret: str
    optout_token_header: str = "X-Apsis-Webhook-Token"
    # ASSUMED: the public docs name a profile-tags call but not its path; {keyspace}, {key} and {section}
    # are filled in (URL-encoded). Correct it here once a real account shows the path.
    profile_tags_path: str = "/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/tags"
    # A new person in one call: APSIS documents (sure: high) that the v1 attribute PATCH creates a missing
    # profile. false = the older two calls (create, then v2 PATCH), should an account show otherwise.
    create_with_attribute_patch: bool = True
    # How long after the click the opt-out automation may call us (a Wait node delays it). An older
    # `occurred_at` is not believed: it is replaced by the receipt time (optout_time.occurred_at says why).
    optout_max_age_hours: float = Field(default=24.0, gt=0, le=24 * 366)
    # ASSUMED: the opt-out Webhook node sends times in UTC (or with their zone). A time without one is read in
    # this zone: "UTC", an IANA name ("America/New_York"), or "unknown" (the latest moment it can mean).
    optout_time_zone: str = "UTC"
    #: when to read a person's APSIS consents before the first opt-in of a subscription (existing_optouts.py)
    existing_optouts: Literal["known_profiles", "always", "never"] = "known_profiles"

    @field_validator("profile_tags_path")
    @classmethod
    def _check_tags_path(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith("/") or "{key}" not in value:
            _reject(value, "a path starting with '/' that contains {key} (and may contain {keyspace} and {section})")
        unknown = set(re.findall(r"{([^}]*)}", value)) - {"keyspace", "key", "section"}
        if unknown:
            _reject(value, "a path whose placeholders are only {keyspace}, {key} and {section}")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: Any) -> str:
        return _url(value)

    @field_validator("optout_time_zone", mode="before")
    @classmethod
    def _check_time_zone(cls, value: Any) -> str:
        if not isinstance(value, str) or not _known_zone(value):
            _reject(value, "'UTC', 'unknown' or an IANA time zone name such as 'Europe/Brussels'")
        return value

    @field_validator("credentials_secret", "optout_token_secret")
    @classmethod
    def _check_secret(cls, value: Any) -> str:
        return _secret_name(value)

    @field_validator("section", "keyspace")
    @classmethod
    def _discriminator(cls, value: Any) -> str:
        return _check_pattern(value, _DISCRIMINATOR, "an APSIS One discriminator such as 'com.apsis1.sections.default'")

    @field_validator("optout_token_header")
    @classmethod
    def _header(cls, value: Any) -> str:
        return _check_pattern(value, _HEADER, "an HTTP header name (letters, digits and '-')")


def _condition_value(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        # Efficy sends text: 1 and True both mean "1" here. From a YAML file a plain value arrives as the text
        # typed, and an unquoted yes/no word is refused before this (`_settle_scalars`).
        return as_text(value)
    _reject(value, "a text or number value (use is_empty / not_empty to test for an empty field)")


class SyncCondition(_Model):
    """One test on a person's field; all conditions of a config must hold for the person to be synced."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["field", op]} for op in OPERATORS]},
    )

    field: str
    equals: str | None = None
    not_equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in", min_length=1)
    is_empty: Literal[True] | None = None
    not_empty: Literal[True] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_operator(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        present = [op for op in OPERATORS if op in data or (op == "in" and "in_" in data)]
        if len(present) == 1:
            return data
        unknown = [k for k in data if k not in (*OPERATORS, "field", "in_")]
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)" for k in unknown if (m := difflib.get_close_matches(k, OPERATORS, 1))
        ]
        found = "no operator" if not present else "operators " + ", ".join(present)
        if hints:
            found += "; unknown " + ", ".join(hints)
        raise PydanticCustomError(
            "config_value",
            "found {found}; allowed: {allowed}",
            {"found": found, "allowed": "exactly one of " + ", ".join(OPERATORS)},
        )

    @field_validator("field", mode="before")
    @classmethod
    def _field(cls, value: Any) -> str:
        return _efficy_field(value)

    @field_validator("equals", "not_equals", mode="before")
    @classmethod
    def _value(cls, value: Any) -> str:
        return _condition_value(value)

    @field_validator("in_", mode="before")
    @classmethod
    def _values(cls, value: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            _reject(value, "a non-empty list of values, such as ['A', 'B']")
        return [_condition_value(v) for v in value]

    @field_validator("is_empty", "not_empty", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        if value is not True:
            _reject(value, "true (write the other operator, is_empty or not_empty, for the opposite)")
        return value

    @cached_property
    def operator(self) -> str:
        """Asked once per condition per person in a full sync: worked out once (the model is frozen)."""
        return next(op for op in OPERATORS if getattr(self, "in_" if op == "in" else op) is not None)

    @property
    def expected(self) -> str | list[str] | None:
        value = getattr(self, "in_" if self.operator == "in" else self.operator)
        return None if value is True else value

    def describe(self) -> str:
        """How the condition reads in reports: "ROBINSON equals '0'"."""
        if self.operator in ("is_empty", "not_empty"):
            return f"{self.field} {self.operator}"
        return f"{self.field} {self.operator} {self.expected!r}"


class FieldMapping(_Model):
    efficy: str
    apsis: str
    type: ValueType = "string"

    @field_validator("efficy", mode="before")
    @classmethod
    def _field(cls, value: Any) -> str:
        return _efficy_field(value)

    @field_validator("apsis")
    @classmethod
    def _attribute(cls, value: Any) -> str:
        _check_pattern(value, _DISCRIMINATOR, "an APSIS One attribute such as 'com.apsis1.attributes.firstname'")
        if value in RESERVED_ATTRIBUTES:
            _reject(
                value,
                "any attribute except "
                + " and ".join(RESERVED_ATTRIBUTES)
                + f" ({EMAIL_FIELD} and {KEY_FIELD} are mapped to them automatically; remove this mapping)",
            )
        return str(value)


def _not_a_bool(value: Any) -> Any:
    """`crm_profile: true` is no profile: pydantic's lax int would store it as profile 1."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number (an Efficy id), not true or false")
    return value


#: a CRM profile or query id
EfficyId = Annotated[int, BeforeValidator(_not_a_bool), Field(gt=0)]


class ConsentMapping(_Model):
    """Membership of a CRM profile = opt-in on one topic for one channel; both channels need two mappings."""

    crm_profile: EfficyId
    subscription: str
    channel: Literal["email", "sms"]

    @field_validator("subscription")
    @classmethod
    def _topic(cls, value: Any) -> str:
        return _check_pattern(value, _DISCRIMINATOR, "an APSIS One topic such as 'usercreated.topics.news-ab12'")


def _tag_name(value: Any) -> str:
    return _check_pattern(value, _TAG, "a tag name of 1-128 characters without leading or trailing spaces")


class ProfileTag(_Model):
    """Mirrors membership of a CRM profile: member -> tagged, not a member -> untagged."""

    crm_profile: EfficyId
    tag: str

    @field_validator("tag")
    @classmethod
    def _check_tag(cls, value: Any) -> str:
        return _tag_name(value)


class QueryTag(_Model):
    """Tags every person an Efficy query returns (on a full sync, or on its own schedule)."""

    query: EfficyId
    tag: str
    schedule: str | None = None

    @field_validator("tag")
    @classmethod
    def _check_tag(cls, value: Any) -> str:
        return _tag_name(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str) and (_RATE.match(value) or _CRON.match(value)):
            return value
        _reject(value, "an EventBridge schedule such as 'rate(1 day)' or 'cron(0 3 * * ? *)'")


class TagsConfig(_Model):
    profiles: list[ProfileTag] = []
    queries: list[QueryTag] = []


class FullSyncSettings(_Model):
    max_concurrency: int = Field(default=5, ge=1, le=100)
    page_size: int = Field(default=500, ge=1, le=5000)
    write_mode: Literal["diff", "import"] = "diff"
    #: import mode: persons per import file, gathered across pages (the arithmetic: fullsync/collect.py)
    import_rows: int = Field(default=20_000, ge=1, le=100_000)


class SafetySettings(_Model):
    """The blast-radius breaker (safety.py): a run that would remove more than `max_removal_percent` of the
    persons holding a consent or tag (and at least `min_removals`, so one person cannot block a small
    integration) holds its removals back until an admin confirms (`full-sync start ID --allow-removals-up-to N`,
    the halted run's counts; `--allow-removals`: any number).
    Real time counts removals per `window_minutes` against the same threshold."""

    max_removal_percent: float = Field(default=5.0, gt=0, le=100)
    min_removals: int = Field(default=10, ge=1)
    window_minutes: int = Field(default=60, ge=1, le=1440)


class IntegrationConfig(_Model):
    """One Efficy environment <-> one APSIS One section."""

    integration_id: str
    efficy: EfficySettings
    apsis: ApsisSettings
    sync_conditions: list[SyncCondition] = []
    field_mappings: list[FieldMapping] = []
    consent_mappings: list[ConsentMapping] = []
    tags: TagsConfig = TagsConfig()
    on_condition_lost: Literal["leave", "untag", "delete"] = "leave"
    on_delete: Literal["delete", "untag", "ignore"] = "ignore"
    full_sync: FullSyncSettings = FullSyncSettings()
    safety: SafetySettings = SafetySettings()

    @field_validator("integration_id")
    @classmethod
    def _slug(cls, value: Any) -> str:
        return _check_pattern(value, _SLUG, "a slug of lower-case letters, digits and '-' (1-64), such as 'acme-eu'")

    @model_validator(mode="after")
    def _coherent(self) -> IntegrationConfig:
        problems = cross_check(config_to_dict(self))
        if problems:
            raise PydanticCustomError("config_cross_check", "{problems}", {"problems": "; ".join(map(str, problems))})
        return self

    def consent_mapping_for(self, topic: str, channel: str) -> ConsentMapping | None:
        """The mapping of a subscription on a channel; the topic matched without case, as the route matches it."""
        wanted = topic.casefold()
        return next(
            (m for m in self.consent_mappings if m.subscription.casefold() == wanted and m.channel == channel), None
        )

    def managed_tags(self, *, with_queries: bool = True) -> list[str]:
        """The tags this integration sets now: CRM-profile tags, and query tags (unless the queries are not known).
        Only these are ever taken away: a tag no longer mapped may have been handed over to APSIS users."""
        tags = [t.tag for t in self.tags.profiles]
        if with_queries:
            tags += [q.tag for q in self.tags.queries]
        return sorted(set(tags))


def config_to_dict(config: IntegrationConfig, *, only_set: bool = False) -> dict[str, Any]:
    """Plain JSON-able data; unused condition operators and unset optional values are left out. `only_set`:
    only what the config sets, as a stored version holds it (store/configs.py): a file started from it pins no
    default, so a later default reaches the integration and an older stack still reads the version."""
    return config.model_dump(mode="json", exclude_none=True, exclude_unset=only_set)
