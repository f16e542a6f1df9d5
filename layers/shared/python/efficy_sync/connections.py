"""API clients per integration, built from its config and its secrets, kept for the life of a warm Lambda.

Keeping them means one TCP connection pool and one APSIS token per integration per container, instead of
one per message.
"""

from __future__ import annotations

import hashlib
import json
import threading

from .clients.apsis import ApsisClient
from .clients.efficy import EfficyClient
from .config import IntegrationConfig
from .secrets import get_json_secret, get_secret
from .settings import settings

_lock = threading.Lock()
_efficy: dict[tuple[str, ...], EfficyClient] = {}
_apsis: dict[tuple[str, ...], ApsisClient] = {}


def _fingerprint(secret_value: str) -> str:
    """Clients are cached per secret *value*: a rotated key builds a new client within the secret cache's TTL."""
    return hashlib.sha256(secret_value.encode()).hexdigest()[:16]


def efficy_client(cfg: IntegrationConfig) -> EfficyClient:
    api_key = get_secret(cfg.efficy.api_key_secret)
    key = (cfg.integration_id, cfg.efficy.base_url, _fingerprint(api_key), cfg.efficy.model_dump_json())
    with _lock:
        found = _efficy.get(key)
        if found is None:
            found = EfficyClient(
                cfg.efficy.base_url,
                api_key,
                customer=cfg.efficy.customer,
                profile_detail=cfg.efficy.profile_detail,
                policy=settings().retry_policy(),
                not_found_codes=cfg.efficy.error_codes.not_found,
                relation_missing_codes=cfg.efficy.error_codes.relation_missing,
                relation_exists_codes=cfg.efficy.error_codes.relation_exists,
            )
            _efficy[key] = found
        return found


def apsis_client(cfg: IntegrationConfig) -> ApsisClient:
    creds = get_json_secret(cfg.apsis.credentials_secret)
    key = (
        cfg.integration_id,
        cfg.apsis.model_dump_json(),
        _fingerprint(json.dumps(creds, sort_keys=True)),
    )
    with _lock:
        found = _apsis.get(key)
        if found is None:
            found = ApsisClient(
                cfg.apsis.base_url,
                creds["client_id"],
                creds["client_secret"],
                section=cfg.apsis.section,
                keyspace=cfg.apsis.keyspace,
                policy=settings().retry_policy(),
                profile_tags_path=cfg.apsis.profile_tags_path,
            )
            _apsis[key] = found
        return found


def forget(integration_id: str) -> None:
    """A rotated secret or a changed config: build the clients again on next use."""
    with _lock:
        for cache in (_efficy, _apsis):
            for key in [k for k in cache if k[0] == integration_id]:
                del cache[key]
