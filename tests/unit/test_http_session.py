"""The API clients' sessions read the environment once (clients/http.py `_read_environment_once`): requests
would walk os.environ for proxies and look for a ~/.netrc on every call, and a ~/.netrc would replace our own
Authorization header. With a proxy variable set, requests keeps its per-call reading (NO_PROXY is per host)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from efficy_sync.clients.http import RetryPolicy, build_session

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_a_proxy_the_environment_is_not_read_per_call(no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("NO_PROXY", "localhost")  # alone it routes nothing through a proxy
    session = build_session(RetryPolicy())
    assert session.trust_env is False


def test_a_netrc_never_replaces_our_authorization(no_proxy_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine crm.example.com login someone password secret\n")
    netrc.chmod(0o600)
    no_proxy_env.setenv("NETRC", str(netrc))
    request = requests.Request("GET", "https://crm.example.com/x", headers={"Authorization": "Bearer ours"})
    prepared = build_session(RetryPolicy()).prepare_request(request)
    assert prepared.headers["Authorization"] == "Bearer ours"
    assert requests.Session().prepare_request(request).headers["Authorization"] != "Bearer ours"  # what it avoids


def test_a_ca_bundle_variable_still_applies(no_proxy_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_proxy_env.delenv("CURL_CA_BUNDLE", raising=False)
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "bundle.pem"))
    assert build_session(RetryPolicy()).verify == str(tmp_path / "bundle.pem")


def test_with_a_proxy_requests_keeps_reading_the_environment(no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    assert build_session(RetryPolicy()).trust_env is True
