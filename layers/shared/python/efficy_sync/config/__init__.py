"""The integration config: one Efficy environment <-> one APSIS One section, in the YAML shape of DESIGN §5.

Users write it by hand, so every problem is reported at once with its path, what was found and what is allowed
(`consent_mappings[2].channel: found 'fax'; allowed: 'email', 'sms' (line 14)`), never just the first one.
References to things that must exist remotely (fields, CRM profiles, queries, attributes, topics, tags) are
listed by `references` and checked by `check_references` against what the APIs return, so the check itself
stays pure and testable offline.

One module per concern: `model` (the pydantic model, the only part a Lambda's cold path loads, with `names`,
`problems` and the cross-entry `checks` it validates with), `loading` (YAML with line numbers, dump, schema),
`remote` (the references to check against the APIs) and `history` (diffs between versions). The names below
stay importable from `efficy_sync.config`; the last three modules load on first use of one of their names
(PEP 562), so importing the model never pulls in YAML parsing.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .checks import cross_check
from .efficy import EfficyAuth, EfficyErrorCodes, EfficySettings, ProfileRowStatus, RelationTable
from .model import (
    ApsisSettings,
    ConsentMapping,
    FieldMapping,
    FullSyncSettings,
    IntegrationConfig,
    ProfileTag,
    QueryTag,
    SafetySettings,
    SyncCondition,
    TagsConfig,
    config_to_dict,
)
from .names import (
    CRMID_ATTRIBUTE,
    EMAIL_ATTRIBUTE,
    EMAIL_FIELD,
    KEY_FIELD,
    MOBILE_ATTRIBUTE,
    OPERATORS,
    RESERVED_ATTRIBUTES,
)
from .problems import ConfigError, Problem

if TYPE_CHECKING:
    from .history import diff_configs
    from .loading import (
        DEFAULT_SECRETS_PREFIX,
        SECRET_KINDS,
        config_from_dict,
        config_to_yaml,
        json_schema,
        load_config_file,
        load_config_text,
        secret_name_problems,
    )
    from .remote import check_references, references

#: names served by a module that is imported only when one of them is first asked for
_LAZY = {
    "diff_configs": "history",
    "DEFAULT_SECRETS_PREFIX": "loading",
    "SECRET_KINDS": "loading",
    "config_from_dict": "loading",
    "config_to_yaml": "loading",
    "json_schema": "loading",
    "load_config_file": "loading",
    "load_config_text": "loading",
    "secret_name_problems": "loading",
    "check_references": "remote",
    "references": "remote",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "CRMID_ATTRIBUTE",
    "DEFAULT_SECRETS_PREFIX",
    "EMAIL_ATTRIBUTE",
    "EMAIL_FIELD",
    "KEY_FIELD",
    "MOBILE_ATTRIBUTE",
    "OPERATORS",
    "RESERVED_ATTRIBUTES",
    "SECRET_KINDS",
    "ApsisSettings",
    "ConfigError",
    "ConsentMapping",
    "EfficyAuth",
    "EfficyErrorCodes",
    "EfficySettings",
    "FieldMapping",
    "FullSyncSettings",
    "IntegrationConfig",
    "Problem",
    "ProfileRowStatus",
    "ProfileTag",
    "QueryTag",
    "RelationTable",
    "SafetySettings",
    "SyncCondition",
    "TagsConfig",
    "check_references",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "cross_check",
    "diff_configs",
    "json_schema",
    "load_config_file",
    "load_config_text",
    "references",
    "secret_name_problems",
]
