"""`config show ID --webhook-url` (issue 16.5): what it tells the administrator to register is exactly what the
webhook route accepts, in each `efficy.auth.mode` (checked with webhook_auth.verify, the route's own check)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from efficy_sync.config import IntegrationConfig, load_config_file
from efficy_sync.webhook_auth import WebhookAuthError, sign, sign_body, verify
from efficy_sync_tools.commands.config import webhook_registration

ROOT = Path(__file__).resolve().parents[2]
API = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
SECRET = "s3cr&t/+="  # characters a URL must encode
BODY = b'{"database": "x", "records": []}'


def _config(**auth: object) -> IntegrationConfig:
    cfg = load_config_file(ROOT / "examples" / "demo.yaml")
    efficy = cfg.efficy.model_copy(update={"auth": type(cfg.efficy.auth).model_validate(auth)})
    return cfg.model_copy(update={"efficy": efficy})


def _verify(cfg: IntegrationConfig, headers: dict[str, str], query: dict[str, str]) -> None:
    auth = cfg.efficy.auth
    verify(
        headers,
        BODY,
        SECRET,
        mode=auth.mode,
        query=query,
        signature_header=auth.signature_header,
        timestamp_header=auth.timestamp_header,
        secret_header=auth.secret_header,
    )


def test_url_token_puts_the_encoded_secret_in_the_url_and_no_header() -> None:
    cfg = _config(mode="url_token")
    doc = webhook_registration(cfg, API + "/", SECRET)
    parts = urlsplit(doc["url"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{API}/integrations/demo/efficy/webhook"
    assert "s3cr%26t%2F%2B%3D" in parts.query and doc["headers"] == {}
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    _verify(cfg, {}, query)  # what Efficy sends when the URL is registered as printed


def test_header_mode_names_the_header_with_the_secret() -> None:
    cfg = _config(mode="header", secret_header="X-Shared")
    doc = webhook_registration(cfg, API, SECRET)
    assert doc["url"] == f"{API}/integrations/demo/efficy/webhook" and doc["headers"] == {"X-Shared": SECRET}
    _verify(cfg, doc["headers"], {})


@pytest.mark.parametrize("mode", ["hmac_body", "hmac"])
def test_signing_modes_name_the_headers_and_the_secret(mode: str) -> None:
    cfg = _config(mode=mode)
    doc = webhook_registration(cfg, API, SECRET)
    assert "token=" not in doc["url"] and doc["secret"] == SECRET
    auth = cfg.efficy.auth
    if mode == "hmac_body":
        assert list(doc["headers"]) == ["X-Justin-Signature"]
        headers = {"X-Justin-Signature": sign_body(doc["secret"], BODY)}
    else:
        assert set(doc["headers"]) == {auth.timestamp_header, auth.signature_header}
        ts = str(int(time.time()))
        headers = {auth.timestamp_header: ts, auth.signature_header: sign(doc["secret"], ts, BODY)}
    _verify(cfg, headers, {})
    with pytest.raises(WebhookAuthError):
        _verify(cfg, {k: v + "0" for k, v in headers.items()}, {})
