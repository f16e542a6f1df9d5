"""What every part of the integration config model validates with: the strict frozen base model, the name
patterns and the checks of URLs, secret names and Efficy field names."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict

from .problems import _check_pattern, _reject

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_$.]*$")
_DISCRIMINATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$")
_TAG = re.compile(r"^\S(?:.{0,126}\S)?$")
_RATE = re.compile(r"^rate\(([1-9][0-9]*) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((\S+ ){5}\S+\)$")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


def _url(value: Any) -> str:
    parsed = urlparse(value) if isinstance(value, str) else None
    if not parsed or parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        _reject(value, "an http(s) URL without query, such as 'https://acme.efficy.cloud/crm'")
    return str(value)


def _secret_name(value: Any) -> str:
    return _check_pattern(value, _SECRET_NAME, "a Secrets Manager secret name such as 'efficy-sync/acme-eu/efficy'")


def _efficy_field(value: Any) -> str:
    """Efficy columns are upper case; accepting 'opened' for OPENED saves a round trip for the user."""
    return _check_pattern(value, _FIELD, "an Efficy field name such as 'OPENED'").upper()
