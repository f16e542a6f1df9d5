"""Secrets by name from Secrets Manager, cached for a while (powertools Parameters does the caching).

The two public routes check a caller's secret, which changes on both sides of a rotation one after the other
(`accepted_secret`): Efficy's and APSIS One's retries of a refused call are not documented, so a call refused
in that gap may be a change, or an opt-out, that nobody sends again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from .settings import settings

_held: tuple[Any, Any] | None = None  # (the shared Secrets Manager client, the provider built on it)


def _provider() -> Any:
    """One provider per shared client: when the clients are rebuilt for another endpoint (aws.reset_clients:
    the local stack, the tests), the provider and the values it cached go with the old one, as the CLI's stack
    outputs had to (CI, stop 43: a process-wide cache kept answering for the endpoint it was first built on)."""
    global _held
    from .aws import client

    current = client("secretsmanager")
    held = _held
    if held is None or held[0] is not current:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        held = _held = (current, SecretsProvider(boto3_client=current))
    return held[1]


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


#: After a refusal, the secret is read again at most this often per name in one container: a flood of wrong
#: credentials must not become a flood of Secrets Manager calls (one a second per container at most). Short,
#: because a stray refusal caches the versions as they were: a caller switching to a value put within this
#: window is refused until it ends (10 s was too long: such calls are not sent again).
REREAD_SECONDS = 1.0
_versions_lock = threading.Lock()
_versions: dict[str, tuple[float, list[tuple[str, str]]]] = {}


def _read_versions(name: str) -> list[tuple[str, str]]:
    """(label, value) of the versions worth trying once the cached value was refused: the current value read
    again (the caller changed first: ours is up to `cache_seconds` old), then AWSPREVIOUS while the current
    version is younger than `secret_grace_seconds` (we changed first: the caller has not been told yet)."""
    from botocore.exceptions import ClientError

    from .aws import client

    with _versions_lock:
        cached = _versions.get(name)
        if cached and time.monotonic() - cached[0] < REREAD_SECONDS:
            return cached[1]
    sm = client("secretsmanager")
    try:
        current = sm.get_secret_value(SecretId=name)
    except ClientError as exc:
        raise RuntimeError(f"secret {name!r} could not be read from Secrets Manager: {exc}") from exc
    found = [("current", current.get("SecretString") or "")]
    created = current.get("CreatedDate")
    age = time.time() - created.timestamp() if created else float("inf")
    if age <= settings().secret_grace_seconds:
        try:
            previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
            found.append(("previous", previous.get("SecretString") or ""))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":  # no previous version
                raise RuntimeError(f"secret {name!r}: its previous version could not be read: {exc}") from exc
    with _versions_lock:
        _versions[name] = (time.monotonic(), found)
    return found


def accepted_secret(name: str, check: Callable[[str], None], refused: type[Exception]) -> str:
    """The value of secret `name` that passes `check` (which raises `refused` for wrong credentials): the cached
    value, else the current one read again, else, during a rotation's grace time, the previous version. A call
    that passes only with the previous version is accepted with a warning and the metric
    `SecretPreviousVersionAccepted`: the caller must be given the new secret before the grace time ends.
    Raises the first refusal when no version passes; other errors (an empty secret) pass through.

    A blank cached value (the secret not set yet) is not checked first: its check raises "not set", which
    passed through before the versions were read again, so a value just put was answered 503 for the whole
    cache time (and a sender's few retries gave up)."""
    cached = get_secret(name)
    blank = not cached.strip()
    refusal: Exception | None = None
    for value in [] if blank else _spellings(cached):
        try:
            check(value)
            return value
        except refused as exc:
            refusal = refusal or exc
    for label, fetched in _read_versions(name):
        if label == "current" and fetched.strip():
            blank = False  # set since it was cached: its refusal (401) is the answer, not "not set"
        if fetched == cached or not fetched.strip():
            continue  # already refused; an empty value never proves anything
        passing = None
        for value in _spellings(fetched):
            try:
                check(value)
                passing = value
                break
            except refused as exc:
                refusal = refusal or exc
        if passing is None:
            continue
        if label == "current":  # the secret changed since it was cached: every later call reads the new one
            _provider().get(name, max_age=int(settings().cache_seconds), force_fetch=True)
        if label == "previous":
            from .observability import count, logger

            count("SecretPreviousVersionAccepted")
            logger.warning(
                "a call was accepted with the secret's previous version: give the caller the new one before the "
                "grace time ends (runbook: Rotating secrets)",
                extra={"secret": name, "grace_seconds": settings().secret_grace_seconds},
            )
        return passing
    if blank or refusal is None:  # not set, and no version read passes: the check says why (503, sent again)
        check(cached)
        raise AssertionError("a blank secret passed its check")  # pragma: no cover - the checks refuse blanks
    raise refusal


def _spellings(value: str) -> list[str]:
    """The value as stored and, when it has them, without surrounding spaces and newlines: a secret put from a
    file (`--secret-string file://...`) usually ends in a newline that nobody types into the caller."""
    stripped = value.strip()
    return [value, stripped] if stripped and stripped != value else [value]


def reset() -> None:
    global _held
    _held = None
    with _versions_lock:
        _versions.clear()
