"""API clients per integration, built from its config and its secrets, kept for the life of a warm Lambda.

Keeping them means one TCP connection pool and one APSIS token per integration per container, instead of
one per message.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import TypeVar

from .clients.apsis import ApsisClient
from .clients.apsis_transport import TokenStore
from .clients.efficy import EfficyClient
from .clients.http import RetryPolicy
from .clients.token_hold import SharedRefusals
from .config import IntegrationConfig
from .secrets import get_json_secret, get_secret
from .settings import settings

_lock = threading.Lock()
_efficy: dict[tuple[str, ...], EfficyClient] = {}
_apsis: dict[tuple[str, ...], ApsisClient] = {}
_Client = TypeVar("_Client")


def _kept(cache: dict[tuple[str, ...], _Client], key: tuple[str, ...], build: Callable[[], _Client]) -> _Client:
    """One client per key for the life of the container (a client holds its connection pool and token)."""
    with _lock:
        found = cache.get(key)
        if found is None:
            found = build()
            cache[key] = found
        return found


def _fingerprint(secret_value: str) -> str:
    """Clients are cached per secret *value*: a rotated key builds a new client within the secret cache's TTL."""
    return hashlib.sha256(secret_value.encode()).hexdigest()[:16]


def efficy_client(cfg: IntegrationConfig, policy: RetryPolicy | None = None) -> EfficyClient:
    """The integration's Efficy client (EfficyClient.from_config), kept per config, API key and retry policy
    (`policy` defaults to the workers' settings; the write-back passes a more impatient one)."""
    policy = policy or settings().retry_policy()
    api_key = get_secret(cfg.efficy.api_key_secret)
    key = (cfg.integration_id, cfg.efficy.model_dump_json(), _fingerprint(api_key), repr(policy))
    return _kept(_efficy, key, lambda: EfficyClient.from_config(cfg, api_key=api_key, policy=policy))


def apsis_client(cfg: IntegrationConfig, policy: RetryPolicy | None = None) -> ApsisClient:
    """The integration's APSIS One client (ApsisClient.from_config), kept per config, credentials and policy."""
    policy = policy or settings().retry_policy()
    creds = _trimmed(get_json_secret(cfg.apsis.credentials_secret))
    key = (
        cfg.integration_id,
        cfg.apsis.model_dump_json(),
        _fingerprint(json.dumps(creds, sort_keys=True)),
        repr(policy),
    )

    def build() -> ApsisClient:
        client = ApsisClient.from_config(cfg, credentials=creds, policy=policy, token_store=_tokens(cfg, creds))
        client.token_hold.share(_refusals(cfg, creds))
        return client

    return _kept(_apsis, key, build)


def _trimmed(creds: dict[str, object]) -> dict[str, object]:
    """The client id and secret as the client sends them (ApsisClient.from_config drops the whitespace a secret
    put from a file ends with): the token store and the shared refusal record are keyed by them too, else they
    named another API client than the request budget and than a secret put without the newline."""
    return {k: v.strip() if k in ("client_id", "client_secret") and isinstance(v, str) else v for k, v in creds.items()}


def _tokens(cfg: IntegrationConfig, creds: dict[str, object]) -> TokenStore | None:
    """The stack's shared token store (apsis_tokens.py says why): one token a day per API client, not one per
    container."""
    from .apsis_tokens import token_store

    return token_store(settings().apsis_token_prefix, cfg.apsis.base_url, str(creds.get("client_id", "")))


def _refusals(cfg: IntegrationConfig, creds: dict[str, object]) -> SharedRefusals:
    """Where a refused token request is held for every container of these credentials (store/token_refusals.py):
    held per container alone, fifty warm workers with a revoked key spent the account's 10 token requests a
    minute many times over. Keyed like the request budget (budget.account_key) and by the credentials' hash."""
    from .budget import account_key
    from .store.token_refusals import TokenRefusals

    client_id, secret = str(creds.get("client_id", "")), str(creds.get("client_secret", ""))
    return TokenRefusals(settings().state_table, account_key(cfg.apsis.base_url, client_id), client_id, secret)


def email_lookup(cfg: IntegrationConfig) -> Callable[[str], list[int]]:
    """Efficy contacts holding an address, for `PersonSyncer`: the client is built on the first call, so a batch
    without an e-mail change never reads the Efficy secret."""
    return lambda address: efficy_client(cfg).find_contacts_by_email(address)


def forget(integration_id: str) -> None:
    """A rotated secret or a changed config: build the clients again on next use."""
    with _lock:
        for cache in (_efficy, _apsis):
            for key in [k for k in cache if k[0] == integration_id]:
                del cache[key]
