"""Bodies the real servers may send that the simulators never do, served over real HTTP by the simulators'
fault rules to the real clients.

- a UTF-8 byte order mark before valid JSON (Efficy is a Delphi server; Windows/.NET front ends add one): every
  answer of both clients is unreadable, and Efficy's is typed as a permanent business error;
- a web page answered 200 by what stands in front of Efficy (maintenance page, SSO login page after a redirect):
  typed EfficyBusinessError("not valid JSON"), which no retry clause names, while the same page as a 504 is
  EfficyUnavailable (retried) and APSIS's client types a 200 web page as an outage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import STATE_MACHINE_RETRIES, TransientError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

KEY = "efficy-test-key"
FAST = RetryPolicy(total=1, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
BOM = "\ufeff"
CONSULT = [
    {
        "@name": "consult", "entity": "Cont", "key": 7,
        "@func": [
            {"@name": "master", "#result": {"#class": "dataset", "#data": [{"K_CONTACT": 7, "NAME": "N"}]}},
            {"@name": "detail", "detail": "Prof", "#result": {"#class": "dataset", "#data": [{"K_PROFILE": 12}]}},
        ],
    }
]  # fmt: skip
PAGE = "<html><head><title>Maintenance</title></head><body>Back soon</body></html>"


@pytest.fixture
def sim() -> Iterator[EfficySimulator]:
    simulator = EfficySimulator().start()
    yield simulator
    simulator.stop()


def serve(sim: EfficySimulator, path: str, body: str, content_type: str) -> None:
    spec = {"path_regex": path, "status": 200, "count": 5, "body": body, "content_type": content_type}
    assert requests.post(f"{sim.url}/_sim/faults", json=spec, timeout=5).status_code == 200


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_efficy_json_with_a_byte_order_mark_is_read(sim: EfficySimulator, content_type: str) -> None:
    serve(sim, "^/crm/json", BOM + json.dumps(CONSULT), content_type)
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        person = efficy.get_persons([7])[7]
    assert person["NAME"] == "N" and person["profiles"] == [12]


def test_apsis_json_with_a_byte_order_mark_is_read() -> None:
    sim = ApsisSimulator(client_id="p5", client_secret="p5-secret", rate_limits=False).start()
    try:
        apsis = ApsisClient(sim.url, "p5", "p5-secret", section="com.apsis1.sections.default", policy=FAST)
        apsis.list_keyspaces()  # token first
        body = BOM + json.dumps({"items": [{"discriminator": "com.apsis1.keyspaces.crm-id"}]})
        sim.add_fault(
            path_regex="^/audience/keyspaces$", status=200, body=body, content_type="application/json", count=1
        )
        assert apsis.list_keyspaces() == [{"discriminator": "com.apsis1.keyspaces.crm-id"}]
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("^/v1/records/contacts", lambda c: c.list_persons_page(0, 100)),  # a full-sync page
        ("^/crm/json", lambda c: c.get_persons([7])),  # a real-time refetch
    ],
    ids=["records-page", "consult"],
)
def test_a_web_page_answered_200_is_an_outage_the_state_machine_retries(sim: EfficySimulator, path, call) -> None:
    serve(sim, path, PAGE, "text/html; charset=utf-8")
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy, pytest.raises(Exception) as caught:
        call(efficy)
    assert isinstance(caught.value, TransientError), f"{type(caught.value).__name__}: {caught.value}"
    assert type(caught.value).__name__ in STATE_MACHINE_RETRIES
