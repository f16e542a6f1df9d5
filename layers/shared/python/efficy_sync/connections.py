"""API clients per integration, built from its config and its secrets, kept for the life of a warm Lambda.

Keeping them means one TCP connection pool and one APSIS token per integration per container, instead of
one per message.
"""

from __future__ import annotations

import threading

from .clients.apsis import ApsisClient
from .clients.efficy import EfficyClient
from .config import IntegrationConfig
from .secrets import get_json_secret, get_secret
from .settings import settings

_lock = threading.Lock()
_efficy: dict[tuple[str, str], EfficyClient] = {}
_apsis: dict[tuple[str, str, str], ApsisClient] = {}


def efficy_client(cfg: IntegrationConfig) -> EfficyClient:
    key = (cfg.integration_id, cfg.efficy.base_url)
    with _lock:
        found = _efficy.get(key)
        if found is None:
            found = EfficyClient(
                cfg.efficy.base_url,
                get_secret(cfg.efficy.api_key_secret),
                customer=cfg.efficy.customer,
                profile_detail=cfg.efficy.profile_detail,
                policy=settings().retry_policy(),
            )
            _efficy[key] = found
        return found


def apsis_client(cfg: IntegrationConfig) -> ApsisClient:
    key = (cfg.integration_id, cfg.apsis.base_url, cfg.apsis.section)
    with _lock:
        found = _apsis.get(key)
        if found is None:
            creds = get_json_secret(cfg.apsis.credentials_secret)
            found = ApsisClient(
                cfg.apsis.base_url,
                creds["client_id"],
                creds["client_secret"],
                section=cfg.apsis.section,
                keyspace=cfg.apsis.keyspace,
                policy=settings().retry_policy(),
            )
            _apsis[key] = found
        return found


def forget(integration_id: str) -> None:
    """A rotated secret or a changed config: build the clients again on next use."""
    with _lock:
        for cache in (_efficy, _apsis):
            for key in [k for k in cache if k[0] == integration_id]:
                del cache[key]
