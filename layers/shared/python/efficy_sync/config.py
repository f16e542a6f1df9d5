"""The integration config: one Efficy environment <-> one APSIS One section, in the YAML shape of DESIGN §5.

Users write it by hand, so every problem is reported at once with its path, what was found and what is allowed
(`consent_mappings[2].channel: found 'fax'; allowed: 'email', 'sms' (line 14)`), never just the first one.
References to things that must exist remotely (fields, CRM profiles, queries, attributes, topics, tags) are
listed by `references` and checked by `check_references` against what the APIs return, so the check itself
stays pure and testable offline.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from efficy_sync.values import ValueType, as_text

if TYPE_CHECKING:  # yaml is only needed to read or write files, not on a Lambda's cold path
    import yaml

EMAIL_FIELD = "EMAIL1"
KEY_FIELD = "K_CONTACT"
EMAIL_ATTRIBUTE = "com.apsis1.attributes.email"
CRMID_ATTRIBUTE = "com.apsis1.attributes.crmid"
MOBILE_ATTRIBUTE = "com.apsis1.attributes.mobile"
RESERVED_ATTRIBUTES = {EMAIL_ATTRIBUTE: EMAIL_FIELD, CRMID_ATTRIBUTE: KEY_FIELD}
OPERATORS = ("equals", "not_equals", "in", "is_empty", "not_empty")

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_$.]*$")
_DISCRIMINATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$")
_TAG = re.compile(r"^\S(?:.{0,126}\S)?$")
_RATE = re.compile(r"^rate\(([1-9][0-9]*) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((\S+ ){5}\S+\)$")


# --- problems -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where, what was found, what is allowed."""

    path: str
    message: str
    found: str | None = None
    allowed: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path}: {self.message}{where}"


class ConfigError(Exception):
    """Raised with every problem found, so a user fixes a file in one pass instead of one error per run."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the integration config:\n{lines}")


def _show(value: Any) -> str:
    """How a found value is quoted in a message: YAML-like, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:77] + "..."
        return repr(text)
    if isinstance(value, int | float):
        return str(value)
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(path: str, found: Any, allowed: str) -> Problem:
    shown = _show(found)
    return Problem(path, f"found {shown}; allowed: {allowed}", found=shown, allowed=allowed)


def _reject(found: Any, allowed: str) -> NoReturn:
    """Raised from validators; the formatter turns it into 'found X; allowed: Y'."""
    raise PydanticCustomError(
        "config_value", "found {found}; allowed: {allowed}", {"found": _show(found), "allowed": allowed}
    )


def _check_pattern(value: Any, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        _reject(value, allowed)
    return value


# --- the model ------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class EfficyAuth(_Model):
    """How the Efficy webhook proves it is Efficy (webhook.py explains each mode; header names are settings
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


def _url(value: Any) -> str:
    parsed = urlparse(value) if isinstance(value, str) else None
    if not parsed or parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        _reject(value, "an http(s) URL without query, such as 'https://acme.efficy.cloud/crm'")
    return value


def _secret_name(value: Any) -> str:
    return _check_pattern(value, _SECRET_NAME, "a Secrets Manager secret name such as 'efficy-sync/acme-eu/efficy'")


class EfficyErrorCodes(_Model):
    """Efficy's business-error codes the sync acts on. ASSUMED: Efficy does not publish its codes, so each
    list is a setting to correct against a real instance (the codes show in `explain` and in the logs)."""

    not_found: list[str] = Field(default_factory=lambda: ["RECORD_NOT_FOUND"], min_length=1)
    relation_missing: list[str] = Field(default_factory=lambda: ["RELATION_NOT_FOUND"], min_length=1)
    relation_exists: list[str] = Field(default_factory=lambda: ["LINK_EXISTS"], min_length=1)


class EfficySettings(_Model):
    base_url: str
    api_key_secret: str
    webhook_secret_secret: str
    customer: str | None = None
    auth: EfficyAuth = EfficyAuth()
    profile_detail: str = "Prof"  # ASSUMED name of the person's CRM-profile detail
    page_size: int = Field(default=500, ge=1, le=500)
    error_codes: EfficyErrorCodes = EfficyErrorCodes()

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: Any) -> str:
        return _url(value)

    @field_validator("api_key_secret", "webhook_secret_secret")
    @classmethod
    def _check_secret(cls, value: Any) -> str:
        return _secret_name(value)


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


def _efficy_field(value: Any) -> str:
    """Efficy columns are upper case; accepting 'opened' for OPENED saves a round trip for the user."""
    return _check_pattern(value, _FIELD, "an Efficy field name such as 'OPENED'").upper()


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

    @property
    def operator(self) -> str:
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
        return value


class ConsentMapping(_Model):
    """Membership of a CRM profile = opt-in on one topic for one channel; both channels need two mappings."""

    crm_profile: int = Field(gt=0)
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

    crm_profile: int = Field(gt=0)
    tag: str

    @field_validator("tag")
    @classmethod
    def _check_tag(cls, value: Any) -> str:
        return _tag_name(value)


class QueryTag(_Model):
    """Tags every person an Efficy query returns (on a full sync, or on its own schedule)."""

    query: int = Field(gt=0)
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
        return next((m for m in self.consent_mappings if m.subscription == topic and m.channel == channel), None)


# --- checks that span several entries ---------------------------------------------------------------------------


def _items(data: Mapping[str, Any], *keys: str) -> list[tuple[int, Mapping[str, Any]]]:
    node: Any = data
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, list):
        return []
    return [(i, item) for i, item in enumerate(node) if isinstance(item, Mapping)]


def _key(value: Any) -> str:
    return str(value).strip().lower() if value is not None else ""


def cross_check(data: Mapping[str, Any]) -> list[Problem]:
    """Duplicates and conflicts between entries. Works on raw (possibly invalid) data so the loader can report
    these together with per-field problems."""
    problems: list[Problem] = []
    problems += _check_consents(data)
    problems += _check_field_mappings(data)
    problems += _check_tags(data)
    return problems


def _check_consents(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], int] = {}
    by_profile: dict[tuple[str, str], tuple[int, Any]] = {}
    by_topic: dict[tuple[str, str], tuple[int, Any]] = {}
    mobile_mapped = any(_key(m.get("apsis")) == MOBILE_ATTRIBUTE for _, m in _items(data, "field_mappings"))
    for i, m in _items(data, "consent_mappings"):
        profile, topic, channel = _key(m.get("crm_profile")), _key(m.get("subscription")), _key(m.get("channel"))
        path = f"consent_mappings[{i}]"
        if (profile, topic, channel) in seen:
            problems.append(
                Problem(path, f"duplicate of consent_mappings[{seen[profile, topic, channel]}]; remove one")
            )
            continue
        seen[profile, topic, channel] = i
        if (profile, channel) in by_profile:
            j, other = by_profile[profile, channel]
            problems.append(
                _problem(
                    f"{path}.subscription",
                    m.get("subscription"),
                    f"one subscription per CRM profile and channel: consent_mappings[{j}] already maps profile "
                    f"{m.get('crm_profile')} on {channel} to {other!r}",
                )
            )
        else:
            by_profile[profile, channel] = (i, m.get("subscription"))
        if (topic, channel) in by_topic:
            j, other = by_topic[topic, channel]
            problems.append(
                _problem(
                    f"{path}.crm_profile",
                    m.get("crm_profile"),
                    f"one CRM profile per subscription and channel: consent_mappings[{j}] already maps profile "
                    f"{other} to {m.get('subscription')!r} on {channel}",
                )
            )
        else:
            by_topic[topic, channel] = (i, m.get("crm_profile"))
        if channel == "sms" and not mobile_mapped:
            problems.append(
                _problem(
                    f"{path}.channel",
                    m.get("channel"),
                    f"'email'; an sms consent needs a field mapping to {MOBILE_ATTRIBUTE} (type phone)",
                )
            )
    return problems


def _check_field_mappings(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    targets: dict[str, int] = {}
    for i, m in _items(data, "field_mappings"):
        target = _key(m.get("apsis"))
        if target in targets:
            problems.append(
                _problem(
                    f"field_mappings[{i}].apsis",
                    m.get("apsis"),
                    f"an attribute no other mapping writes (field_mappings[{targets[target]}] already does)",
                )
            )
        else:
            targets[target] = i
        if target == MOBILE_ATTRIBUTE and m.get("type", "string") != "phone":
            problems.append(
                _problem(f"field_mappings[{i}].type", m.get("type", "string"), f"'phone' for {MOBILE_ATTRIBUTE}")
            )
    return problems


def _check_tags(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    for kind in ("profiles", "queries"):
        for i, t in _items(data, "tags", kind):
            tag, path = _key(t.get("tag")), f"tags.{kind}[{i}]"
            if tag in owners:
                problems.append(
                    _problem(
                        f"{path}.tag",
                        t.get("tag"),
                        f"a tag no other entry sets ({owners[tag]} already does: a profile tag is removed from "
                        "non-members, which would undo the other)",
                    )
                )
            else:
                owners[tag] = path
    return problems


# --- pydantic errors -> problems ------------------------------------------------------------------------------


def _path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class that holds the last element of `loc`, to list the fields it allows."""
    model: Any = IntegrationConfig
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        info = fields.get(part)
        if info is None:
            return None
        model = _inner_model(info.annotation)
        if model is None:
            return None
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_TYPE_WORDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "text",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "too_short": "a non-empty list",
}


def _from_pydantic(error: Mapping[str, Any]) -> Problem | None:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    path = _path(loc)
    if kind == "config_cross_check":
        return None  # reported from the raw data by cross_check, each with its own path
    if kind == "config_value":
        allowed = str(ctx["allowed"])
        return Problem(path, f"found {ctx['found']}; allowed: {allowed}", found=str(ctx["found"]), allowed=allowed)
    if kind == "literal_error":
        return _problem(path, error["input"], str(ctx.get("expected", "")).replace(" or ", ", "))
    if kind == "missing":
        return Problem(path, "missing; this field is required", allowed="a value")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = [f.alias or n for n, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = ", ".join(names) or "none"
        return Problem(path, f"unknown field{hint}; allowed: {allowed}", found=repr(loc[-1]), allowed=allowed)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        limits = [f"{words[kind]} {v}" for v in ctx.values()]
        return _problem(path, error["input"], "a number " + " and ".join(limits))
    if kind in _TYPE_WORDS:
        return _problem(path, error["input"], _TYPE_WORDS[kind])
    return Problem(path, f"found {_show(error.get('input'))}; {error['msg']}")


# --- YAML -----------------------------------------------------------------------------------------------------


def _index_nodes(node: yaml.Node, path: str, lines: dict[str, int], problems: list[Problem]) -> None:
    """Maps each config path to its line, and reports duplicate keys (PyYAML silently keeps the last one)."""
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(Problem(child, f"duplicate key; first written on line {seen[key]}", line=line))
                continue
            seen[key] = line
            lines[child] = line
            _index_nodes(value_node, child, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_nodes(item, f"{path}[{i}]", lines, problems)


def _line_for(path: str, lines: Mapping[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


#: YAML 1.1 reads these plain words as true/false; in a sync condition they are refused, not guessed
_YES_NO_WORDS = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
_STR_TAG = "tag:yaml.org,2002:str"
_CONDITION_VALUES = ("equals", "not_equals", "in")


def _core_loader() -> type:
    """A PyYAML SafeLoader with the YAML 1.2 core schema instead of YAML 1.1's implicit types.

    YAML 1.1 (PyYAML's default) reads `NO`, `yes`, `on`, `off`, `y`, `n` as booleans, `017` as octal 15,
    `1:30` as 90 (base 60) and `2024-01-01` as a date: the value the admin typed is silently changed. The
    YAML 1.2 core schema only knows true/false, null, decimal/0o/0x integers and plain floats; everything
    else is text. (PyYAML, already a dependency, with its resolvers replaced: no second YAML library.)
    """
    import yaml

    class CoreLoader(yaml.SafeLoader):
        pass

    CoreLoader.yaml_implicit_resolvers = {}
    resolvers = [
        ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
        ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
        (
            "float",
            r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            "-+0123456789.",
        ),
        ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
        ("merge", r"<<", "<"),
    ]
    for kind, pattern, first in resolvers:
        CoreLoader.add_implicit_resolver(f"tag:yaml.org,2002:{kind}", re.compile(f"^(?:{pattern})$"), list(first))

    def construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
        text = str(loader.construct_scalar(node))
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
        base = 8 if digits.startswith("0o") else 16 if digits.startswith("0x") else 10
        return sign * int(digits[2:] if base != 10 else digits, base)

    def construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
        text = str(loader.construct_scalar(node)).lower()
        return float(text.replace(".inf", "inf").replace(".nan", "nan"))

    CoreLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    CoreLoader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return CoreLoader


def _field_annotation(parts: Sequence[str | int]) -> tuple[Any, type[BaseModel] | None]:
    """The type the model declares at a config path (and the model holding it), or (None, None) if unknown."""
    model: type[BaseModel] | None = IntegrationConfig
    annotation: Any = IntegrationConfig
    holder: type[BaseModel] | None = None
    for part in parts:
        if isinstance(part, int):
            args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
            lists = [a for a in args if getattr(a, "__origin__", None) is list] or (
                [annotation] if getattr(annotation, "__origin__", None) is list else []
            )
            if not lists or not getattr(lists[0], "__args__", ()):
                return None, None
            annotation = lists[0].__args__[0]
            model = _inner_model(annotation)
            continue
        if model is None:
            return None, None
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        if part not in fields:
            return None, None
        holder, annotation = model, fields[part].annotation
        model = _inner_model(annotation)
    return annotation, holder


def _takes_text(annotation: Any) -> bool:
    """True where the schema expects text: str, an optional str, or a choice among texts (Literal)."""
    if annotation is str:
        return True
    if getattr(annotation, "__origin__", None) is Literal:
        return all(isinstance(a, str) for a in annotation.__args__)
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return bool(args) and getattr(annotation, "__origin__", None) is not list and any(_takes_text(a) for a in args)


def _settle_scalars(node: Any, parts: list[str | int], problems: list[Problem]) -> None:
    """Where the schema expects text, a plain (unquoted) scalar is the text as typed: `equals: 1` is "1",
    `tag: 2024` the tag "2024". A yes/no word in a sync condition is refused: it may mean the text (`NO`
    for Norway) as well as Efficy's yes/no "1"/"0", and guessing either way changes who is synced."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _settle_scalars(value_node, [*parts, str(key_node.value)], problems)
        return
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _settle_scalars(item, [*parts, i], problems)
        return
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return  # quoted (or a block scalar): text already
    annotation, holder = _field_annotation(parts)
    last_name = next((p for p in reversed(parts) if isinstance(p, str)), None)
    in_condition = holder is SyncCondition and last_name in _CONDITION_VALUES
    if in_condition and annotation is not None and _YES_NO_WORDS.match(node.value):
        path = _path(parts)
        problems.append(
            Problem(
                path,
                f"found {node.value} without quotes; YAML may read it as yes/no instead of the text {node.value}: "
                f"write '{node.value}' (in quotes) to compare with that text, or 1 / 0 for an Efficy yes/no field",
                found=node.value,
                allowed="quoted text, or a number",
                line=node.start_mark.line + 1,
            )
        )
        node.tag = _STR_TAG
    elif node.tag not in (_STR_TAG, "tag:yaml.org,2002:null") and annotation is not None and _takes_text(annotation):
        node.tag = _STR_TAG  # the constructor then takes the scalar's source text


def _parse_yaml(text: str) -> tuple[Any, dict[str, int], list[Problem]]:
    """Reads with YAML 1.2 core rules, text positions taking the text typed; see `_core_loader`."""
    import yaml

    loader = _core_loader()(text)
    try:
        root = loader.get_single_node()
        lines: dict[str, int] = {}
        problems: list[Problem] = []
        if root is not None:
            _index_nodes(root, "", lines, problems)
            _settle_scalars(root, [], problems)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        where = f", column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        return None, {}, [Problem("(file)", f"not valid YAML: {what}{where}", line=line)]
    finally:
        loader.dispose()
    return data, lines, problems


# --- load, dump, schema ---------------------------------------------------------------------------------------


def config_from_dict(data: Any, *, _lines: Mapping[str, int] | None = None) -> IntegrationConfig:
    """Validates already-parsed data (e.g. a stored version); raises ConfigError with every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError([_problem("(root)", data, "a mapping with integration_id, efficy, apsis, ...")])
    problems: list[Problem] = []
    config = None
    try:
        config = IntegrationConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems += [p for e in exc.errors() if (p := _from_pydantic(e)) is not None]
    problems += cross_check(data)
    if problems:
        lines = _lines or {}
        placed = [Problem(p.path, p.message, p.found, p.allowed, p.line or _line_for(p.path, lines)) for p in problems]
        raise ConfigError(sorted(placed, key=lambda p: p.line or 0))
    assert config is not None
    return config


#: the kind of each secret, the last part of its name: the functions' IAM policies grant each function only the
#: kinds it reads, by name (`efficy-sync/*/<kind>` in template.yaml), so a secret named otherwise cannot be read
SECRET_KINDS = {
    ("efficy", "api_key_secret"): "efficy",
    ("efficy", "webhook_secret_secret"): "webhook",
    ("apsis", "credentials_secret"): "apsis",
    ("apsis", "optout_token_secret"): "apsis-optout",
}


def secret_name_problems(data: Any, lines: Mapping[str, int] | None = None) -> list[Problem]:
    """Secret names outside the convention `efficy-sync/<integration>/<kind>` the deployed functions may read.

    Checked on the files admins apply (not on the model): a name the IAM policies do not cover would pass
    validation and then fail every call with AccessDenied.
    """
    problems: list[Problem] = []
    for (section, field), kind in SECRET_KINDS.items():
        block = data.get(section) if isinstance(data, Mapping) else None
        name = block.get(field) if isinstance(block, Mapping) else None
        if not isinstance(name, str) or not _SECRET_NAME.match(name):
            continue  # missing or malformed: the model reports it
        if re.fullmatch(rf"efficy-sync/[^/]+(?:/[^/]+)*/{re.escape(kind)}", name) is None:
            path = f"{section}.{field}"
            allowed = f"a name of the form efficy-sync/<integration>/{kind}"
            problems.append(
                Problem(
                    path,
                    f"found {name!r}; allowed: {allowed} (the functions may only read secrets named so; "
                    f"see template.yaml)",
                    found=repr(name),
                    allowed=allowed,
                    line=_line_for(path, lines or {}),
                )
            )
    return problems


def load_config_text(text: str) -> IntegrationConfig:
    """Parses and validates a YAML (or JSON) config; raises ConfigError listing every problem with its path."""
    data, lines, problems = _parse_yaml(text)
    problems += secret_name_problems(data, lines)
    if problems and data is None:
        raise ConfigError(problems)
    try:
        config = config_from_dict(data, _lines=lines)
    except ConfigError as exc:
        raise ConfigError(sorted(problems + exc.problems, key=lambda p: p.line or 0)) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config_file(path: str | Path) -> IntegrationConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("(file)", f"cannot read {path}: {exc}")]) from None
    return load_config_text(text)


def config_to_dict(config: IntegrationConfig) -> dict[str, Any]:
    """Plain JSON-able data; unused condition operators and unset optional values are left out."""
    return config.model_dump(mode="json", exclude_none=True)


def config_to_yaml(config: IntegrationConfig) -> str:
    """What `config show` prints and `config apply` takes back unchanged."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # PyYAML quotes yes/no/on/off but not y/n, which the loader refuses unquoted in a condition
        style = "'" if _YES_NO_WORDS.match(value) else None
        return dumper.represent_scalar(_STR_TAG, value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(
        config_to_dict(config), Dumper=Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema for editors (YAML language servers read it)."""
    schema = IntegrationConfig.model_json_schema(by_alias=True)
    return {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "efficy-sync integration"}


# --- remote references ----------------------------------------------------------------------------------------

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
    for i, m in enumerate(config.consent_mappings):
        sites.append(("efficy", "crm_profiles", m.crm_profile, f"consent_mappings[{i}].crm_profile"))
        sites.append(("apsis", "topics", m.subscription, f"consent_mappings[{i}].subscription"))
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


# --- changes between versions ---------------------------------------------------------------------------------


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            _flatten(child, f"{path}.{key}" if path else str(key), out)
    else:
        out[path] = value


def _render(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return _show(value)


def diff_configs(old: IntegrationConfig | None, new: IntegrationConfig) -> list[str]:
    """Human-readable changes from `old` to `new`, one line each, for `config apply`."""
    if old is None:
        return [f"new integration {new.integration_id!r}"]
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(config_to_dict(old), "", before)
    _flatten(config_to_dict(new), "", after)
    changes: list[str] = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        if isinstance(a, list) or isinstance(b, list):
            changes += _diff_list(path, a or [], b or [])
        elif path not in before:
            changes.append(f"{path}: set to {_render(b)}")
        elif path not in after:
            changes.append(f"{path}: removed (was {_render(a)})")
        else:
            changes.append(f"{path}: {_render(a)} -> {_render(b)}")
    return changes


def _diff_list(path: str, old: list[Any], new: list[Any]) -> list[str]:
    old_r, new_r = [_render(x) for x in old], [_render(x) for x in new]
    removed = [r for r in old_r if r not in new_r]
    added = [r for r in new_r if r not in old_r]
    lines = [f"{path}: removed {r}" for r in removed] + [f"{path}: added {r}" for r in added]
    if not lines and old_r != new_r:
        lines.append(f"{path}: reordered")
    return lines
