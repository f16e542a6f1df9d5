"""Logs mask personal data whatever a line carries; metrics carry the clients' API calls and 429s."""

from __future__ import annotations

import collections
import io
import json
import logging
import threading
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.clients.meter import CallMeter, meter
from efficy_sync.observability import (
    SECRET_MASK,
    add_api_call_metrics,
    count,
    logger,
    metrics,
    scrub,
    scrub_text,
    serving,
)
from efficy_sync_tools.sims.apsis import ApsisSimulator


def test_scrub_text_masks_addresses_and_numbers() -> None:
    text = scrub_text("to jo.doe@Example.com or +32 470 00 00 01 / 0470000001, order 2026-05-01 id 123456789012")
    assert text == "to j***@example.com or +32*****01 / 047*****01, order 2026-05-01 id 123456789012"


def test_scrub_text_masks_what_a_body_logged_whole_carries() -> None:
    """A request body is one string in the event log: contact fields by name (a mobile without + or 0, a list
    of them), and an address at the end of a long run of mailbox characters (that run once took seconds per
    line: the address pattern was tried from every position of it)."""
    body = '{"mobile": "32470123456", "MOBILE": ["32470999999"], "tags": ["a"], "token": "t0k3n"}'
    assert scrub_text(body) == '{"mobile": "324*****56", "MOBILE": ["324*****99"], "tags": ["a"], "token": "***"}'
    assert scrub_text("x" * 50_000 + " jo@example.com").endswith(" j***@example.com")
    assert scrub_text("mail jane.doe@example.com, x%40y.com, <bob@ex.org>") == (
        "mail j***@example.com, x***@y.com, <b***@ex.org>"
    )


def test_scrub_masks_contact_fields_by_name_and_keeps_the_rest() -> None:
    record = {
        "message": {"EMAIL1": "not an address", "mobile": "12", "FIRSTNAME": "Jo", "records": [{"email": "a@b.io"}]},
        "function_name": "efficy-sync-Apply",
        "function_arn": "arn:aws:lambda:eu-west-1:012345678901:function:x",
        "person": "k-0123456789ab",
        "exception": ValueError("bad x.y@z.org"),
        "count": 3,
        "ok": True,
    }
    out = scrub(record)
    assert out["message"] == {
        "EMAIL1": "n***",
        "mobile": "1***",
        "FIRSTNAME": "J***",
        "records": [{"email": "a***@b.io"}],
    }
    assert out["function_name"] == "efficy-sync-Apply" and out["function_arn"] == record["function_arn"]
    assert out["person"] == "k-0123456789ab" and out["count"] == 3 and out["ok"] is True
    assert out["exception"] == "bad x***@z.org"


def test_logger_writes_masked_json(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    logger.setLevel(logging.INFO)
    logger.info("sync of jo@example.com", extra={"MOBILE": "+32470000001", "person": "k-1"})
    try:
        raise RuntimeError("APSIS said jo@example.com")
    except RuntimeError:
        logger.exception("failed")
    out = stream.getvalue()
    assert "jo@example.com" not in out and "+32470000001" not in out
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["message"] == "sync of j***@example.com" and first["MOBILE"] == "+32*****01"
    assert first["person"] == "k-1"
    assert "j***@example.com" in second["exception"]


def test_meter_counts_attempts_429_5xx_and_unanswered() -> None:
    m = CallMeter()

    class History:
        def __init__(self, status: int | None) -> None:
            self.status = status

    class Response:
        status_code = 200

        class raw:
            class retries:
                history = (History(429), History(503), History(None))

    m.record("apsis", Response())
    m.record_unanswered("efficy", 3)
    assert m.take() == {
        ("apsis", "calls"): 4,
        ("apsis", "429"): 1,
        ("apsis", "5xx"): 1,
        ("apsis", "timeouts"): 1,
        ("efficy", "calls"): 3,
        ("efficy", "timeouts"): 3,
    }
    assert m.take() == {}


def test_meter_loses_no_count_when_taken_while_threads_record() -> None:
    """Each thread counts on its own; a take during the calls reports what was counted so far, the next the rest."""
    m = CallMeter()

    class Response:
        status_code = 503
        raw = None

    threads, per_thread = 8, 2_000
    start = threading.Barrier(threads + 1)

    def calls() -> None:
        start.wait()
        for _ in range(per_thread):
            m.record("apsis", Response())

    workers = [threading.Thread(target=calls) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    takes = []
    while any(worker.is_alive() for worker in workers):
        takes.append(m.take())
    for worker in workers:
        worker.join()
    takes.append(m.take())
    total = collections.Counter()
    for taken in takes:
        total.update(taken)
    assert total == {("apsis", "calls"): threads * per_thread, ("apsis", "5xx"): threads * per_thread}
    assert m.take() == {}


def test_meter_folds_the_counts_of_ended_threads() -> None:
    """A warm Lambda starts threads for every page: their counts stay, their entries do not pile up."""
    m = CallMeter()
    for _ in range(3):
        workers = [threading.Thread(target=m.record_unanswered, args=("efficy",)) for _ in range(50)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert m.take() == {("efficy", "calls"): 50, ("efficy", "timeouts"): 50}
    m.record_unanswered("efficy")  # this thread's own counts go on after the others ended
    assert m.take() == {("efficy", "calls"): 1, ("efficy", "timeouts"): 1}
    assert len(m._live) == 1  # only this (live) thread is still listed


def test_client_retries_are_metered_over_real_http() -> None:
    with ApsisSimulator(client_id="cid", client_secret="not-a-real-secret") as sim:
        sim.add_fault(path_regex="/audience/sections$", status=429, count=2, headers={"Retry-After": "0"})
        client = ApsisClient(
            sim.url,
            "cid",
            "not-a-real-secret",
            section="com.apsis1.sections.default",
            policy=RetryPolicy(total=3, backoff_factor=0),
        )
        meter.take()
        client.list_sections()
        counts = meter.take()
    assert counts[("apsis", "429")] == 2
    assert counts[("apsis", "calls")] == 4  # the token, then the listing three times


def test_unanswered_calls_are_metered() -> None:
    client = ApsisClient(
        "http://127.0.0.1:9",
        "cid",
        "x",
        section="s",
        policy=RetryPolicy(total=1, backoff_factor=0, connect_timeout=0.5),
    )
    meter.take()
    with pytest.raises(Exception, match="APSIS token"):
        client.list_sections()
    assert meter.take()[("apsis", "timeouts")] == 2


def test_handler_metrics_include_api_calls(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    meter.take()
    metrics.clear_metrics()  # counts that tests before this one added outside a handler
    metrics.clear_metrics()  # counts other tests of this worker added outside a handler (no flush) must not leak in

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        meter.record_unanswered("efficy", 2)
        meter._add("apsis", [429, 200])

    handler({}, None)
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert len(blobs) == 1
    blob = blobs[0]
    assert blob["ApsisCalls"] == [2.0] and blob["Apsis429"] == [1.0]
    assert blob["EfficyCalls"] == [2.0] and blob["EfficyTimeouts"] == [2.0]
    assert blob["service"] == "efficy-sync"
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "EfficySync"


def test_an_invocation_that_counted_nothing_prints_nothing_and_warns_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """powertools warns "No application metrics to publish" on every such flush: noise in every log (and in
    `make run`'s output) for a webhook answered 401 or a sweep with nothing to do."""
    import warnings

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    meter.take()
    metrics.clear_metrics()

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the call
        handler({}, None)
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]


def test_add_api_call_metrics_moves_counts_once() -> None:
    class Sink:
        def __init__(self) -> None:
            self.added: dict[str, float] = {}

        def add_metric(self, name: str, unit: Any, value: float) -> None:
            self.added[name] = value

    meter.take()
    meter._add("efficy", [504, 200])
    sink = Sink()
    assert add_api_call_metrics(sink) == {"EfficyCalls": 2, "Efficy5xx": 1}
    assert add_api_call_metrics(Sink()) == {}


@pytest.mark.parametrize("disabled", ["true", "false"])
def test_the_cold_start_metric_follows_metrics_disabled(
    disabled: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", disabled)
    context = type("Context", (), {"function_name": "efficy-sync-test"})()
    metrics.provider.add_cold_start_metric(context)
    blobs = [line for line in capsys.readouterr().out.splitlines() if '"ColdStart"' in line]
    assert len(blobs) == (0 if disabled == "true" else 1)


# ---- a corpus of real-world forms (issue 11.8) ------------------------------------------------------------------

PERSONAL = [
    "jane.private@localhost",
    '"jane private"@example.com',
    "bob@[10.0.0.1]",
    "bob@[IPv6:2001:db8::1]",
    "o'brien@example.ie",
    "jane+tag@sub.example.co.uk",
    "JANE.DOE@EXAMPLE.COM",
    "jöse.müller@exämple.de",
    "x!#$%&*=?^`{|}~@example.org",
    "jane%40example.com",
    "+32 470 12 34 56",
    "+32470123456",
    "+32 (0)470 12-34-56",
    "+32.470.12.34.56",
    "0032 470 12 34 56",
    "0032470123456",
    "00 32 470 12 34 56",
    "0470 12 34 56",
    "0470/12.34.56",
    "(0470) 12 34 56",
    "0470123456",
    "+1 (555) 123-4567",
    "+44 20 7946 0958",
    "0044 20 7946 0958",
    "020 7946 0958",
]
KEPT = [
    "2026-12-02T10:54:02.123Z",
    "2026-05-01",
    "30/12/1899 08:00",
    "02.12.2026 10:00",
    "arn:aws:lambda:eu-west-1:012345678901:function:x",
    "k-0123456789ab",
    "123e4567-e89b-12d3-a456-426614174000",
    "took 0.1234567891 s",
    "id 123456789012",
    "1800000000",
    "records[3].key",
]


@pytest.mark.parametrize("value", PERSONAL)
def test_scrub_text_masks_every_form_of_address_and_number(value: str) -> None:
    for text in (value, f"to {value}.", f"<{value}>", f"x={value}&y=1", f'"{value}"'):
        masked = scrub_text(text)
        assert value not in masked, masked
        assert "***" in masked, masked
    digits = "".join(c for c in value if c.isdigit())
    if "@" not in value and "%40" not in value:
        assert digits not in "".join(c for c in scrub_text(value) if c.isdigit())


@pytest.mark.parametrize("value", KEPT)
def test_scrub_text_keeps_dates_ids_and_numbers_that_are_not_phones(value: str) -> None:
    assert scrub_text(value) == value


def test_credentials_are_masked_by_key_in_logged_events() -> None:
    event = {
        "queryStringParameters": {"token": "s3cr3t-token", "event": "email.unsubscribe"},
        "multiValueQueryStringParameters": {"token": ["s3cr3t-token"]},
        "headers": {
            "X-Apsis-Webhook-Token": "s3cr3t-token",
            "X-Efficy-Webhook-Secret": "s3cr3t-token",
            "X-Justin-Signature": "sha256=abc",
            "Authorization": "Bearer s3cr3t-token",
            "Content-Type": "application/json",
        },
    }
    out = scrub(event)
    assert "s3cr3t" not in json.dumps(out) and "sha256=abc" not in json.dumps(out)
    assert out["queryStringParameters"]["event"] == "email.unsubscribe"
    assert out["headers"]["Content-Type"] == "application/json"


def test_a_credential_header_of_any_name_is_masked_and_the_harmless_ones_shown() -> None:
    """The webhook's credential headers are configurable (`secret_header`, `signature_header`, the opt-out
    token's): one named without "secret", "token" or "key" was logged in clear when event logging was on."""
    event = {
        "headers": {
            "X-Crm-Hook": "s3cr3t-value",
            "X-Acme-Sig": "sha256=abc",
            "Content-Type": "application/json",
            "User-Agent": "Efficy/12",
            "CloudFront-Viewer-Country": "BE",
            "X-Efficy-Timestamp": "1760000000",
            "X-Empty": "",
        },
        "multiValueHeaders": {"X-Crm-Hook": ["s3cr3t-value"], "content-type": ["application/json"]},
        "requestContext": {"headers-like": {"X-Crm-Hook": "shown: not a request's header map"}},
    }
    out = scrub(event)
    assert "s3cr3t" not in json.dumps(out["headers"]) + json.dumps(out["multiValueHeaders"])
    assert "sha256=abc" not in json.dumps(out)
    assert out["headers"]["X-Crm-Hook"] == out["headers"]["X-Acme-Sig"] == SECRET_MASK
    assert out["multiValueHeaders"] == {"X-Crm-Hook": SECRET_MASK, "content-type": ["application/json"]}
    shown = {k: out["headers"][k] for k in ("Content-Type", "User-Agent", "CloudFront-Viewer-Country")}
    assert shown == {"Content-Type": "application/json", "User-Agent": "Efficy/12", "CloudFront-Viewer-Country": "BE"}
    assert out["headers"]["X-Efficy-Timestamp"] == "1760000000" and out["headers"]["X-Empty"] == ""
    assert out["requestContext"]["headers-like"]["X-Crm-Hook"] == "shown: not a request's header map"


def test_credentials_and_contacts_in_a_logged_form_body_or_raw_query_are_masked() -> None:
    """powertools' event logging writes a form body and a raw query string whole: the opt-out route's `token=`
    and a mobile written without + or a leading 0 were kept in clear (found by a probing helper)."""
    event = {
        "body": "event=email.unsubscribe&profile_key=7&token=s3cr3t-token&mobile=32470123456&email=jane%40x.example",
        "rawQueryString": "token=s3cr3t-token&event=email.unsubscribe",
        "path": "/integrations/acme/apsis/optout?token=s3cr3t-token#x",
    }
    text = json.dumps(scrub(event))
    assert "s3cr3t" not in text and "32470123456" not in text and "jane" not in text
    assert "event=email.unsubscribe" in text and "profile_key=7" in text  # the rest is kept for diagnosis


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def _dimensions(blob: dict[str, Any]) -> list[str]:
    return blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]


def test_key_counters_carry_the_integration_dimension(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    meter.take()
    metrics.clear_metrics()  # counts that tests before this one added outside a handler

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        count("PersonsSynced", 1, integration_id="acme")
        count("PersonsSynced", 1, integration_id="acme")
        count("PersonsFailed", 1, integration_id="globex")
        count("StaleEventsDropped", 1, integration_id="acme")  # per deployment only (cost)
        meter._add("apsis", [429, 200])

    handler({}, None)
    blobs = _emf(capsys.readouterr().out)
    per_integration = {b["integration_id"]: b for b in blobs if "integration_id" in b}
    assert set(per_integration) == {"acme", "globex"}
    acme = per_integration["acme"]
    assert sorted(_dimensions(acme)) == ["integration_id", "service"] and acme["service"] == "efficy-sync"
    assert acme["PersonsSynced"] == [2.0] and "StaleEventsDropped" not in acme
    assert per_integration["globex"]["PersonsFailed"] == [1.0]
    # Two integrations served: the API calls cannot be split between them, so neither gets them ...
    assert all("ApsisCalls" not in b for b in per_integration.values())
    # ... and the per-deployment document is as before, with every counter.
    (total,) = [b for b in blobs if "integration_id" not in b]
    assert sum(total["PersonsSynced"]) == 2 and total["ApsisCalls"] == [2.0] and _dimensions(total) == ["service"]


def test_api_calls_go_to_the_only_integration_served(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    meter.take()
    metrics.clear_metrics()  # counts that tests before this one added outside a handler

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        serving("acme")  # served, nothing counted (e.g. unchanged persons)
        meter._add("apsis", [429, 429, 200])

    handler({}, None)
    (acme,) = [b for b in _emf(capsys.readouterr().out) if b.get("integration_id") == "acme"]
    assert acme["ApsisCalls"] == [3.0] and acme["Apsis429"] == [2.0] and "Apsis5xx" not in acme


def test_a_disabled_flush_forgets_the_invocations_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm process with metrics disabled (the local stack) must not keep every invocation's values: they
    would grow without bound and all be printed at the first enabled flush (CI saw ApsisCalls [232, 139, 2])."""
    metrics.clear_metrics()
    meter.take()

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        count("PersonsSynced", 1)
        meter._add("apsis", [200, 200, 200])

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    handler({}, None)
    handler({}, None)
    assert _emf(capsys.readouterr().out) == []
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    handler({}, None)
    (total,) = [b for b in _emf(capsys.readouterr().out) if "integration_id" not in b]
    assert total["PersonsSynced"] == [1.0]
    assert total["ApsisCalls"] == [3.0]


def test_urllib3_retry_lines_carry_no_key_nor_address_in_clear() -> None:
    """urllib3 logs a retry's path and query through the root logger, outside our formatter."""
    import logging

    from efficy_sync.pii import hash_key

    record = logging.LogRecord(
        "urllib3.connectionpool", logging.WARNING, __file__, 1,
        "Retrying (%r) after connection broken by '%r': %s",
        ("Retry(total=2)", "ReadTimeoutError()", "/crm/v1/records/contacts?ids=17,42&fields=EMAIL1"),
        None,
    )  # fmt: skip
    logging.getLogger("urllib3.connectionpool").handle(record)
    text = record.getMessage()
    assert text.endswith(f"ids={hash_key(17)},{hash_key(42)}&fields=EMAIL1")
    by_address = logging.LogRecord(
        "urllib3.connectionpool", logging.WARNING, __file__, 1, "Retrying: %s",
        ("/audience/keyspaces/com.apsis1.keyspaces.email/profiles/jo@example.com/sections/s/attributes",), None,
    )  # fmt: skip
    logging.getLogger("urllib3.connectionpool").handle(by_address)
    assert "jo@example.com" not in by_address.getMessage() and "/profiles/k-" in by_address.getMessage()


def test_a_logged_traceback_or_message_names_an_api_url_with_the_key_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests' HTTPError text names the URL, and logger.exception writes it in the traceback: the person key in
    APSIS's /profiles/{key} and Efficy's ids= went to the logs in clear (README: logs carry a hash of the key)."""
    import requests
    from efficy_sync.pii import hash_key

    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    logger.setLevel(logging.INFO)
    url = "https://api.apsis.one/audience/keyspaces/com.apsis1.keyspaces.crm-id/profiles/4711/sections/s/attributes"
    try:
        raise requests.HTTPError(f"404 Client Error: Not Found for url: {url}")
    except requests.HTTPError:
        logger.exception("page failed")
    logger.warning("Efficy said no: /crm/v1/records/contacts?ids=17,42&fields=EMAIL1")
    logger.info("by address: /profiles/jo@example.com/consents")
    out = stream.getvalue()
    first, second, third = (json.loads(line) for line in out.splitlines())
    assert "/profiles/4711" not in out and f"/profiles/{hash_key(4711)}/sections" in first["exception"]
    assert second["message"].endswith(f"?ids={hash_key(17)},{hash_key(42)}&fields=EMAIL1")
    assert (
        "jo@example.com" not in out
        and third["message"] == f"by address: /profiles/{hash_key('jo@example.com')}/consents"
    )
