"""Switching efficy.auth.mode with `config apply` while the webhook route cached the config for a minute: a call
in the newly applied mode was refused (401) by a warm container for EFFICY_SYNC_CACHE_SECONDS. The route reads
the live version number on each call now (as the opt-out route does) and sees an applied version at once."""

from __future__ import annotations

import importlib.util

import pytest
from efficy_sync.store.configs import ConfigStore

from tests.integration.test_ingest_routes import (
    REGION,
    WEBHOOK_SECRET,
    Routes,
    _efficy,
    call,
    records,
    routes,  # noqa: F401
    webhook_event,
)
from tests.integration.test_secret_rotation import signed
from tests.support import ROOT, create_pk_sk_table
from tests.unit.consent_configs import consent_config


def test_a_call_in_the_newly_applied_auth_mode_is_accepted(routes: Routes, monkeypatch: pytest.MonkeyPatch) -> None:
    create_pk_sk_table("config", REGION)
    store = ConfigStore("config")
    store.put(consent_config("acme"), applied_by="t")
    # the config store the route builds at import (the fixture's stub replaced it): read from the table
    spec = importlib.util.spec_from_file_location(
        "ingest_webhook_wiring", ROOT / "functions" / "ingest_webhook" / "app.py"
    )
    assert spec and spec.loader
    wiring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wiring)
    monkeypatch.setattr(routes.webhook, "configs", wiring.configs)
    body = records(1)
    assert call(routes.webhook, webhook_event("acme", body, signed(body, WEBHOOK_SECRET)))[0] == 202
    store.put(consent_config("acme", efficy=_efficy(mode="url_token")), applied_by="t")
    body = records(2)
    status, answer = call(routes.webhook, webhook_event("acme", body, query={"token": [WEBHOOK_SECRET]}))
    assert status == 202, (status, answer)
