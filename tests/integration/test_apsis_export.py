"""The APSIS One profile export (simulator + client) over real HTTP: asynchronous, polled, within its limits."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients import apsis_export
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.apsis_export import (
    EXPORTS_PATH,
    ExportGone,
    download_export,
    export_section,
    request_export,
)
from efficy_sync.clients.errors import ApsisUnavailable, RateLimited, RejectedValue
from efficy_sync.clients.http import RetryPolicy
from efficy_sync_tools.sims.apsis import ApsisSimulator

SECTION = "com.apsis1.sections.default"
NEWSLETTER = "usercreated.topics.newsletter-ab12"
FIRSTNAME = "com.apsis1.attributes.firstname"
LASTNAME = "com.apsis1.attributes.lastname"
NO_RETRY = RetryPolicy(total=0, connect_timeout=2, read_timeout=5)


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator().start()
    yield sim
    sim.stop()


def client_for(sim: ApsisSimulator, keyspace: str = "com.apsis1.keyspaces.crm-id", **kw) -> ApsisClient:
    return ApsisClient(sim.url, sim.client_id, sim.client_secret, section=SECTION, keyspace=keyspace, **kw)


def seed(client: ApsisClient) -> None:
    client.create_profile("1")
    client.patch_attributes("1", {FIRSTNAME: "Ada", LASTNAME: "Lovelace"})
    client.set_consent("1", NEWSLETTER, "email", "opt-in")
    client.patch_tags("1", {"newsletter-readers": True, "sms-club": True})
    client.create_profile("2")


def test_export_lists_the_named_data_of_every_profile_of_our_keyspace(sim: ApsisSimulator) -> None:
    client = client_for(sim)
    seed(client)
    client_for(sim, keyspace="com.apsis1.keyspaces.email").create_profile("x@example.com")

    _, profiles = export_section(client, attributes=[FIRSTNAME], tags=["newsletter-readers"], topics=[NEWSLETTER])

    assert sorted(profiles) == ["1", "2"]  # the e-mail keyspace's profile is not ours
    one = profiles["1"]
    assert one.attributes == {FIRSTNAME: "Ada"}  # only what was named: no lastname
    assert one.tags == {"newsletter-readers"}  # sms-club was not named
    assert one.consents == {(NEWSLETTER, "email"): "opt-in"}
    assert profiles["2"].attributes == {} and profiles["2"].consents == {}
    calls = sim.calls()
    assert calls[f"POST {EXPORTS_PATH}"] == 1


def test_the_export_is_read_as_it_arrives_and_only_the_profiles_asked_for_are_held(
    sim: ApsisSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held whole (bytes, text, tree, objects), an export of the whole APSIS account ran the drift check out of
    memory: it is read in chunks (here of 7 bytes, cut anywhere) and the rows `keep` refuses are dropped."""
    monkeypatch.setattr(apsis_export, "DOWNLOAD_CHUNK_BYTES", 7)
    client = client_for(sim)
    seed(client)
    client.create_profile("3")
    client.patch_attributes("3", {FIRSTNAME: "Zoë 😀"})

    _, profiles = export_section(client, attributes=[FIRSTNAME], tags=["newsletter-readers"], topics=[NEWSLETTER])
    assert sorted(profiles) == ["1", "2", "3"] and profiles["3"].attributes == {FIRSTNAME: "Zoë 😀"}
    assert profiles["1"].consents == {(NEWSLETTER, "email"): "opt-in"} and profiles["1"].tags == {"newsletter-readers"}

    _, kept = export_section(client, attributes=[FIRSTNAME], tags=[], topics=[], keep=lambda key: key != "2")
    assert sorted(kept) == ["1", "3"] and "2" not in kept and kept.get("2") is None


def test_a_download_that_breaks_off_is_an_outage_never_fewer_profiles() -> None:
    """Read as it arrives, a body cut short surfaces while it is read (not inside the call): typed as an outage."""
    body = b'{"profiles": [{"keys": {"com.apsis1.keyspaces.crm-id": "1"}}, '

    class Apsis(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # the token
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(b'{"access_token": "t", "expires_in": 3600}', len_claimed=None)

        def do_GET(self) -> None:  # the export: fewer bytes than its Content-Length, then the connection closes
            self._answer(body, len_claimed=len(body) * 10)
            self.close_connection = True

        def _answer(self, data: bytes, len_claimed: int | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len_claimed or len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Apsis)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ApsisClient(f"http://127.0.0.1:{server.server_port}", "id", "s", section=SECTION, policy=NO_RETRY)
        with pytest.raises(ApsisUnavailable, match="broke off"):
            download_export(client, "/audience/profiles/exports/x")
    finally:
        server.shutdown()
        server.server_close()


def test_poll_answers_404_while_in_progress_then_the_json(sim: ApsisSimulator) -> None:
    sim.profile_exports.export_delay_ms = 1500
    client = client_for(sim)
    seed(client)
    poll_url = request_export(client, attributes=[FIRSTNAME], tags=[], topics=[])

    profiles = download_export(client, poll_url, poll_interval=0.1, timeout=10)

    assert profiles["1"].attributes == {FIRSTNAME: "Ada"}
    polls = sim.calls()[f"GET {EXPORTS_PATH}/{{export_id}}"]
    assert polls >= 2  # at least one 404 (in progress) before the 200, polled once a second at most
    with pytest.raises(ApsisUnavailable, match="not ready"):
        download_export(client, request_export(client, attributes=[FIRSTNAME], tags=[], topics=[]), timeout=0.1)


@pytest.mark.parametrize("status", [202, 204])
def test_a_poll_answering_accepted_while_in_progress_is_waited_on_not_read_as_the_export(
    sim: ApsisSimulator, status: int
) -> None:
    """The contract says 404 while in progress; an API answering 202 (or 204) instead failed the reconciliation
    ("the answer holds no profiles list") where it had only to wait."""
    sim.profile_exports.export_delay_ms = 1500
    sim.profile_exports.in_progress_status = status
    client = client_for(sim)
    seed(client)
    poll_url = request_export(client, attributes=[FIRSTNAME], tags=[], topics=[])

    profiles = download_export(client, poll_url, poll_interval=0.1, timeout=10)

    assert profiles["1"].attributes == {FIRSTNAME: "Ada"}
    assert sim.calls()[f"GET {EXPORTS_PATH}/{{export_id}}"] >= 2
    with pytest.raises(ApsisUnavailable, match="not ready"):  # and still bounded by the timeout
        download_export(client, request_export(client, attributes=[FIRSTNAME], tags=[], topics=[]), timeout=0.1)


def test_gone_export_is_requested_again_and_a_failed_one_raises(sim: ApsisSimulator) -> None:
    client = client_for(sim, policy=NO_RETRY)
    seed(client)
    old = request_export(client, attributes=[FIRSTNAME], tags=[], topics=[])
    sim.profile_exports.expire(old.rsplit("/", 1)[1])
    with pytest.raises(ExportGone):
        download_export(client, old)
    sim.profile_exports.export_requests_per_second = 100  # the test asks twice within a second
    sim.profile_exports.clear()
    used, profiles = export_section(client, attributes=[FIRSTNAME], tags=[], topics=[], poll_url=old)
    assert used != old and "1" in profiles

    sim.profile_exports.fail_next = True
    failed = request_export(client, attributes=[FIRSTNAME], tags=[], topics=[])
    with pytest.raises(ApsisUnavailable) as err:
        download_export(client, failed)
    assert err.value.status == 503
    # a resumed run holding that failed export's poll URL asks for a new one (it waited a day for a 410)
    used, profiles = export_section(client, attributes=[FIRSTNAME], tags=[], topics=[], poll_url=failed)
    assert used != failed and "1" in profiles


def test_export_limits_and_validation(sim: ApsisSimulator) -> None:
    client = client_for(sim, policy=NO_RETRY)
    request_export(client, attributes=[FIRSTNAME], tags=[], topics=[])
    with pytest.raises(RateLimited):  # 1 export request a second
        request_export(client, attributes=[FIRSTNAME], tags=[], topics=[])
    with pytest.raises(RejectedValue, match="at least one"):
        request_export(client, attributes=[], tags=[], topics=[])
    with pytest.raises(RejectedValue, match="unknown attributes"):
        request_export(client, attributes=["usercreated.attributes.nope"], tags=[], topics=[])
