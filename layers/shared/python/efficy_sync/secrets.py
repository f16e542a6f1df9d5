"""Secrets by name from Secrets Manager, cached for a while (powertools Parameters does the caching)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, cast

from .settings import settings


@lru_cache(maxsize=1)
def _provider() -> Any:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from .aws import client

    return SecretsProvider(boto3_client=client("secretsmanager"))


def get_secret(name: str) -> str:
    """The secret's value; a failure names the secret (Secrets Manager's own message does not), so a full sync
    that cannot read one says which. The error keeps powertools' class for the callers that catch it."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        return cast(str, _provider().get(name, max_age=int(settings().cache_seconds)))  # a text secret
    except GetParameterError as exc:
        raise GetParameterError(f"secret {name!r} could not be read from Secrets Manager: {exc}") from exc


def get_json_secret(name: str) -> dict[str, Any]:
    value = get_secret(name)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"secret {name} is not JSON") from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"secret {name} is not a JSON object")
    return parsed


def reset() -> None:
    _provider.cache_clear()
