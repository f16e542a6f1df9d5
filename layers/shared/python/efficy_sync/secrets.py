"""Secrets by name from Secrets Manager, cached for a while (powertools Parameters does the caching)."""

from __future__ import annotations

import json
from typing import Any

from .settings import settings


def get_secret(name: str) -> str:
    from aws_lambda_powertools.utilities import parameters

    from .aws import client

    return parameters.get_secret(name, max_age=int(settings().cache_seconds), boto3_client=client("secretsmanager"))  # type: ignore[return-value]


def get_json_secret(name: str) -> dict[str, Any]:
    value = get_secret(name)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"secret {name} is not JSON") from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"secret {name} is not a JSON object")
    return parsed
