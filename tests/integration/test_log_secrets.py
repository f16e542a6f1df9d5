"""Credentials never reach a log line, whatever an exception's chain says.

A secret put from a file (`--secret-string file://key.txt`) ends in a newline: requests refuses to send it as a
header and raises InvalidHeader naming the value ("... in header value: 'the-key\\n'"). The clients raise their own
error `from` it, so any `logger.exception` of the call (reconcile, a full-sync page's batch, the opt-out route)
wrote the chained text, API key or Bearer token included, to CloudWatch.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import ApiError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.observability import logger
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

FAST = RetryPolicy(total=1, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
SECTION = "com.apsis1.sections.default"


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    logger.setLevel(logging.INFO)
    return stream


@pytest.fixture
def efficy() -> Iterator[EfficySimulator]:
    sim = EfficySimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def apsis() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(import_delay_ms=10, rate_limits=False).start()
    yield sim
    sim.stop()


def test_an_efficy_api_key_requests_refuses_is_not_in_the_logged_traceback(
    efficy: EfficySimulator, log: io.StringIO
) -> None:
    key = "efficy-Key-4f1c9e"
    with EfficyClient(efficy.url, f"{key}\n", policy=FAST) as client, pytest.raises(ApiError) as raised:
        client.list_persons_page(0, 10, ["EMAIL1"])
    try:
        raise raised.value
    except ApiError:
        logger.exception("reconcile failed")
    line = json.loads(log.getvalue())
    assert "InvalidHeader" in line["exception"]  # the chain was logged: the test proves something
    assert key not in log.getvalue(), line["exception"]
    assert "in header value: ***" in line["exception"]


def test_an_apsis_token_requests_refuses_is_not_in_the_logged_traceback(
    apsis: ApsisSimulator, log: io.StringIO
) -> None:
    token = "eyJhbGciOiJub25lIn0.e30.c2lnbmF0dXJl"
    apsis.add_fault(
        path_regex="^/oauth/token$",
        status=200,
        body=json.dumps({"access_token": f"{token}\r\n", "expires_in": 3600}),
        content_type="application/json",
        count=10,
    )
    client = ApsisClient(apsis.url, apsis.client_id, apsis.client_secret, section=SECTION, policy=FAST)
    with pytest.raises(ApiError) as raised:
        client.list_sections()
    try:
        raise raised.value
    except ApiError:
        logger.exception("page failed")
    out = log.getvalue()
    assert "InvalidHeader" in out
    assert token not in out, out


def test_credentials_put_from_a_file_work(efficy: EfficySimulator, apsis: ApsisSimulator) -> None:
    """The newline a file leaves at the end of a secret is nobody's key: the factories (what the Lambdas and the
    CLI build their clients with) drop surrounding whitespace, and the calls go through instead of failing for
    ever on requests' InvalidHeader."""
    from tests.integration.test_client_safety import acme

    data = acme().model_dump(exclude_unset=True)
    data["efficy"] = {k: v for k, v in data["efficy"].items() if k not in ("customer", "profile_detail")}
    data["apsis"] = {k: v for k, v in data["apsis"].items() if k != "profile_tags_path"}
    data["efficy"]["base_url"], data["apsis"]["base_url"] = efficy.url, apsis.url
    cfg = type(acme()).model_validate(data)
    with EfficyClient.from_config(cfg, api_key=f"{efficy.api_key}\n", policy=FAST) as client:
        assert client.list_persons_page(0, 10, ["EMAIL1"]) == []
    credentials = {"client_id": f" {apsis.client_id}\n", "client_secret": f"{apsis.client_secret}\r\n"}
    assert ApsisClient.from_config(cfg, credentials=credentials, policy=FAST).list_sections()
