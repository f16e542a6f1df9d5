"""The two public ingest Lambdas end to end in process: API Gateway proxy events in, moto SQS behind.

What the domain tests cannot show: the raw body the handler signs (isBase64Encoded), the query string in
url_token mode, SQS refusing a whole call (500 "send again", never a 502 after part of the batch was queued), the GET and
form opt-outs, and, fuzzed, that no input makes a route answer 5xx, echo a value, or queue anything on a 4xx.
Logs are captured with powertools' event logging on, so a token in the query string would show there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from efficy_sync import secrets
from efficy_sync.aws import reset_clients
from efficy_sync.observability import logger
from efficy_sync.settings import settings
from efficy_sync.values import whole_number
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from moto import mock_aws

from tests.properties import examples
from tests.support import ROOT
from tests.unit.consent_configs import NEWS, consent_config

REGION = "eu-west-1"
MAX_KEY = 2**53 - 1  # Efficy keys are read as doubles by its JSON-RPC clients: none is larger
WEBHOOK_SECRET = "wh-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
OPTOUT_TOKEN = "optout-token-8c7b6a5948372615"
SECRETS = {"x/w": WEBHOOK_SECRET, "x/o": OPTOUT_TOKEN}


def _efficy(**auth: Any) -> dict[str, Any]:
    return {
        "base_url": "https://crm.example.com/crm",
        "api_key_secret": "x/e",
        "webhook_secret_secret": "x/w",
        **({"auth": auth} if auth else {}),
    }


CONFIGS = {
    "hmac": consent_config("acme"),
    "url": consent_config("acme-url", efficy=_efficy(mode="url_token")),
    "body": consent_config("acme-body", efficy=_efficy(mode="hmac_body", signature_header="X-Justin-Signature")),
}


@dataclass
class Context:
    function_name: str = "ingest"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:ingest"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@dataclass
class Routes:
    webhook: Any
    optout: Any
    sqs: Any
    contact_queue: str
    optout_queue: str
    log: io.StringIO

    def messages(self, queue: str) -> list[dict[str, Any]]:
        found = []
        while True:
            got = self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60)
            batch = got.get("Messages", [])
            if not batch:
                return found
            found += [json.loads(m["Body"]) for m in batch]
            for m in batch:
                self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])

    def depth(self, queue: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _load(folder: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location(f"{folder}_app_under_test", ROOT / "functions" / folder / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def get(integration_id: str) -> Any:
        from efficy_sync.store.configs import UnknownIntegration

        for cfg in CONFIGS.values():
            if cfg.integration_id == integration_id:
                return cfg
        raise UnknownIntegration(integration_id)

    monkeypatch.setattr(module, "configs", type("Configs", (), {"get": staticmethod(get)})())
    return module


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Routes]:
    for name, value in {
        "CONFIG_TABLE": "config",
        "STATE_TABLE": "state",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOGGER_LOG_EVENT": "true",  # the whole event in the log: the scrubber must hold
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        contact = sqs.create_queue(
            QueueName="changes.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"}
        )["QueueUrl"]
        optouts = sqs.create_queue(QueueName="optouts")["QueueUrl"]
        monkeypatch.setenv("CONTACT_QUEUE_URL", contact)
        monkeypatch.setenv("OPTOUT_QUEUE_URL", optouts)
        settings.cache_clear()
        reset_clients()
        secrets.reset()
        for name, value in SECRETS.items():  # read as the handlers do: powertools' cache, version stages
            boto3.client("secretsmanager", region_name=REGION).create_secret(Name=name, SecretString=value)
        stream = io.StringIO()
        monkeypatch.setattr(logger.registered_handler, "stream", stream)
        logger.setLevel(logging.DEBUG)
        yield Routes(
            _load("ingest_webhook", monkeypatch), _load("ingest_optout", monkeypatch), sqs, contact, optouts, stream
        )
        settings.cache_clear()
        reset_clients()
        secrets.reset()


def api_event(
    method: str,
    path: str,
    resource: str,
    integration_id: str,
    *,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, list[str]] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A REST API proxy event as API Gateway builds it (query parameters both single and multi-valued)."""
    if isinstance(body, bytes):
        text = base64.b64encode(body).decode() if base64_body else body.decode("utf-8")
    else:
        text = body
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers or {},
        "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"integration_id": integration_id},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "r-1",
            "accountId": "123456789012",
            "apiId": "local",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": base64_body,
    }


def webhook_event(integration_id: str, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> dict:
    return api_event(
        "POST",
        f"/integrations/{integration_id}/efficy/webhook",
        "/integrations/{integration_id}/efficy/webhook",
        integration_id,
        body=body,
        headers=headers,
        **kw,
    )


def optout_event(method: str, integration_id: str = "acme", **kw: Any) -> dict:
    return api_event(
        method,
        f"/integrations/{integration_id}/apsis/optout",
        "/integrations/{integration_id}/apsis/optout",
        integration_id,
        **kw,
    )


def call(module: Any, event: dict) -> tuple[int, dict[str, Any]]:
    result = module.handler(event, Context())
    return result["statusCode"], json.loads(result["body"] or "null")


def hmac_headers(body: bytes, ts: int | None = None) -> dict[str, str]:
    import time

    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(WEBHOOK_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Efficy-Timestamp": stamp, "X-Efficy-Signature": f"sha256={digest}", "Content-Type": "application/json"}


def records(*keys: int, **extra: Any) -> bytes:
    return json.dumps(
        {
            "records": [
                {"table": 11000, "key": k, "operation": "Update", "date": "2026-01-01T10:00:00Z", **extra} for k in keys
            ]
        }
    ).encode()


# ---- webhook: url_token and hmac_body (16.1) -------------------------------------------------------------------


def test_url_token_accepts_the_token_in_the_query_and_never_logs_it(routes: Routes) -> None:
    body = records(41)
    status, answer = call(routes.webhook, webhook_event("acme-url", body, query={"token": [WEBHOOK_SECRET]}))
    assert (status, answer["accepted"]) == (202, 1)
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [41]
    for query in ({"token": ["wrong"]}, None, {"secret": [WEBHOOK_SECRET]}):
        status, answer = call(routes.webhook, webhook_event("acme-url", body, query=query))
        assert status == 401 and "token" in answer["error"]
    assert routes.depth(routes.contact_queue) == 0
    log = routes.log.getvalue()
    assert '"queryStringParameters"' in log  # the event was logged, the token masked
    assert WEBHOOK_SECRET not in log


def test_url_token_integration_ignores_signature_headers(routes: Routes) -> None:
    body = records(42)
    status, _ = call(routes.webhook, webhook_event("acme-url", body, hmac_headers(body)))
    assert status == 401 and routes.depth(routes.contact_queue) == 0


def test_hmac_body_accepts_x_justin_signature_and_refuses_a_wrong_one(routes: Routes) -> None:
    body = records(43)
    good = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, _ = call(routes.webhook, webhook_event("acme-body", body, {"X-Justin-Signature": good}))
    assert status == 202
    bad = "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    status, answer = call(routes.webhook, webhook_event("acme-body", body, {"X-Justin-Signature": bad}))
    assert status == 401 and "X-Justin-Signature" in answer["error"]
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [43]
    assert WEBHOOK_SECRET not in routes.log.getvalue() and good not in routes.log.getvalue()


def test_hmac_body_accepts_the_same_hmac_as_bare_hex_or_base64(routes: Routes) -> None:
    """The 12.1 connector's header format is not published (only inferred from APSIS's `sha256=<hex>`): the
    same HMAC sent bare or in base64 was a 401, and the batch's changes waited for the next full sync."""
    body = records(45)
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()
    for signature in (digest.hex(), digest.hex().upper(), base64.b64encode(digest).decode(),
                      "SHA256=" + base64.b64encode(digest).decode()):  # fmt: skip
        status, answer = call(routes.webhook, webhook_event("acme-body", body, {"X-Justin-Signature": signature}))
        assert status == 202, (signature, answer)
    other = hmac.new(b"other", body, hashlib.sha256).digest()
    for signature in (other.hex(), base64.b64encode(other).decode(), ""):
        assert call(routes.webhook, webhook_event("acme-body", body, {"X-Justin-Signature": signature}))[0] == 401


def test_hmac_mode_accepts_the_same_hmac_in_upper_case_bare_or_base64(routes: Routes) -> None:
    """Our `hmac` scheme's encoding is assumed (contracts/efficy.md §9 C), and a proxy in .NET writes hex in upper
    case (Convert.ToHexString): the right HMAC of "<timestamp>.<body>" was a 401 unless it was lower-case hex
    behind `sha256=`, and the batch's changes waited for the next full sync. A wrong HMAC stays a 401."""
    body = records(46)
    stamp = hmac_headers(body)["X-Efficy-Timestamp"]
    digest = hmac.new(WEBHOOK_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).digest()
    for signature in (f"sha256={digest.hex().upper()}", f"SHA256={digest.hex()}", digest.hex(),
                      base64.b64encode(digest).decode(), f"sha256= {digest.hex()}"):  # fmt: skip
        headers = {"x-efficy-timestamp": stamp, "x-efficy-signature": signature}  # as a proxy may spell them
        status, answer = call(routes.webhook, webhook_event("acme", body, headers))
        assert status == 202, (signature, answer)
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [46] * 5
    other = hmac.new(b"other", stamp.encode() + b"." + body, hashlib.sha256).digest()
    unstamped = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()  # the body alone: not this scheme
    for signature in (other.hex().upper(), base64.b64encode(other).decode(), unstamped.hex(), ""):
        headers = {"X-Efficy-Timestamp": stamp, "X-Efficy-Signature": signature}
        assert call(routes.webhook, webhook_event("acme", body, headers))[0] == 401
    assert routes.depth(routes.contact_queue) == 0


# ---- webhook: raw bytes, SQS failures, bounded messages (11.3, 11.8) --------------------------------------------


def test_a_base64_encoded_body_is_verified_on_its_original_bytes(routes: Routes) -> None:
    body = records(44, subject="Ünïcode")
    status, _ = call(routes.webhook, webhook_event("acme", body, hmac_headers(body), base64_body=True))
    assert status == 202


def test_a_base64_body_is_logged_decoded_and_scrubbed_never_as_its_base64(routes: Routes) -> None:
    """The API takes every body as binary (template.yaml BinaryMediaTypes), so every event comes base64-encoded.
    powertools' event logging wrote that base64 as it came: the addresses and phones in it, encoded but no less
    readable, passed the scrubber, which reads text. The body is logged decoded, and masked."""
    body = records(47, fields={"EMAIL1": "jane.private@localhost", "MOBILE": "+32 470 12 34 56"})
    event = webhook_event("acme", body, hmac_headers(body), base64_body=True)
    status, _ = call(routes.webhook, event)
    assert status == 202
    log = routes.log.getvalue()
    assert event["body"][:40] not in log  # the base64 text is not logged
    assert "jane.private" not in log and "470 12 34 56" not in log
    assert '"records"' in log and "j***@localhost" in log  # the event was logged, its body decoded and masked


def test_a_correctly_signed_body_in_windows_1252_is_read_and_queued(routes: Routes) -> None:
    """Efficy runs on Windows: refused, the call's changes were lost on every retry."""
    body = '{"records": [{"table": 11000, "key": 7, "operation": "Update", "fields": {"NAME": "Müller"}}]}'.encode(
        "cp1252"
    )
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body), base64_body=True))
    assert status == 202, answer
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [7]


def test_huge_changed_field_names_do_not_travel_and_the_batch_is_queued(routes: Routes) -> None:
    names = {f"F{i:03d}" + "x" * 2000: "v" for i in range(150)}  # 300 KB of field names in one record
    body = json.dumps(
        {
            "records": [
                {"table": 11000, "key": k, "operation": "Update", "date": "2026-01-01T10:00:00Z", "fields": names}
                for k in range(1, 4)
            ]
        }
    ).encode()
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert (status, answer["accepted"]) == (202, 3)
    queued = routes.messages(routes.contact_queue)
    assert sorted(m["person_key"] for m in queued) == [1, 2, 3]
    assert all(len(json.dumps(m)) < 1024 for m in queued)


def test_sqs_refusing_the_call_is_a_500_send_again(routes: Routes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTACT_QUEUE_URL", routes.contact_queue.replace("changes.fifo", "gone.fifo"))
    settings.cache_clear()
    body = records(*range(1, 26))
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert status == 500 and "send again" in answer["error"]


def test_a_huge_key_is_a_400_and_nothing_is_queued(routes: Routes) -> None:
    body = records(10**30)
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert status == 400 and "records[0].key" in answer["error"] and str(10**30) not in answer["error"]
    assert routes.depth(routes.contact_queue) == 0


# ---- opt-out: GET, form, token in the query (16.2) -------------------------------------------------------------

FIELDS = {"event": "email.unsubscribe", "profile_key": "1001", "topic_discriminator": NEWS}


def test_a_get_with_fields_and_token_as_url_parameters_is_queued(routes: Routes) -> None:
    query = {k: [v] for k, v in {**FIELDS, "token": OPTOUT_TOKEN, "email": "jane.private@localhost"}.items()}
    status, answer = call(routes.optout, optout_event("GET", query=query))
    assert (status, answer) == (202, {"accepted": 1})
    (message,) = routes.messages(routes.optout_queue)
    assert (message["profile_key"], message["event"]) == (1001, "email.unsubscribe")
    log = routes.log.getvalue()
    assert OPTOUT_TOKEN not in log and "jane.private@localhost" not in log


def test_a_get_with_a_wrong_or_missing_token_queues_nothing(routes: Routes) -> None:
    for token in (["wrong"], None):
        query = {k: [v] for k, v in FIELDS.items()} | ({"token": token} if token else {})
        status, answer = call(routes.optout, optout_event("GET", query=query))
        assert status == 401 and "token" in answer["error"]
    assert routes.depth(routes.optout_queue) == 0
    assert OPTOUT_TOKEN not in routes.log.getvalue()


def test_a_form_post_with_the_token_header(routes: Routes) -> None:
    clicked = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    body = urlencode({**FIELDS, "occurred_at": clicked.isoformat().replace("+00:00", "Z")}).encode()
    headers = {"X-Apsis-Webhook-Token": OPTOUT_TOKEN, "Content-Type": "application/x-www-form-urlencoded"}
    status, _ = call(routes.optout, optout_event("POST", body=body, headers=headers))
    assert status == 202
    (message,) = routes.messages(routes.optout_queue)
    assert message["occurred_at"] == clicked.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_an_occurred_at_older_than_the_max_age_is_queued_as_the_receipt_time(routes: Routes) -> None:
    """A bogus old time (the integration's default bound is 24 h) is replaced, reported, and still queued."""
    before = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = json.dumps({**FIELDS, "occurred_at": "2001-01-01T00:00:00Z"}).encode()
    status, _ = call(routes.optout, optout_event("POST", body=body, headers={"X-Apsis-Webhook-Token": OPTOUT_TOKEN}))
    assert status == 202
    (message,) = routes.messages(routes.optout_queue)
    assert message["occurred_at"] >= before
    assert "older than apsis.optout_max_age_hours" in routes.log.getvalue()


def test_a_json_post_with_the_token_as_url_parameter(routes: Routes) -> None:
    status, _ = call(
        routes.optout,
        optout_event("POST", body=json.dumps(FIELDS).encode(), query={"token": [OPTOUT_TOKEN]}),
    )
    assert status == 202 and len(routes.messages(routes.optout_queue)) == 1


def test_a_field_given_twice_with_different_values_is_refused(routes: Routes) -> None:
    query = {k: [v] for k, v in {**FIELDS, "token": OPTOUT_TOKEN}.items()} | {"profile_key": ["1001", "1002"]}
    status, answer = call(routes.optout, optout_event("GET", query=query))
    assert status == 400 and answer["field"] == "profile_key"
    assert routes.depth(routes.optout_queue) == 0


def test_optout_sqs_failure_is_a_500(routes: Routes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTOUT_QUEUE_URL", routes.optout_queue.replace("optouts", "gone"))
    settings.cache_clear()
    query = {k: [v] for k, v in {**FIELDS, "token": OPTOUT_TOKEN}.items()}
    status, answer = call(routes.optout, optout_event("GET", query=query))
    assert status == 500 and "send again" in answer["error"]


def test_both_routes_answer_an_unknown_integration_with_404(routes: Routes) -> None:
    body = records(7)
    status, answer = call(routes.webhook, webhook_event("nobody", body, hmac_headers(body)))
    assert (status, answer) == (404, {"error": "unknown integration 'nobody'"})
    query = {k: [v] for k, v in {**FIELDS, "token": OPTOUT_TOKEN}.items()}
    status, answer = call(routes.optout, optout_event("GET", "nobody", query=query))
    assert (status, answer) == (404, {"error": "unknown integration 'nobody'"})
    assert routes.depth(routes.contact_queue) == 0 and routes.depth(routes.optout_queue) == 0


def test_both_routes_answer_500_when_the_config_cannot_be_read(routes: Routes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config table outage is not the caller's fault: "send again", never a 502 from a crashed Lambda."""

    def outage(integration_id: str) -> Any:
        raise ConnectionError("the config table could not be reached")

    for module in (routes.webhook, routes.optout):
        monkeypatch.setattr(module, "configs", type("Configs", (), {"get": staticmethod(outage)})())
    body = records(7)
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert status == 500 and "send again" in answer["error"]
    query = {k: [v] for k, v in {**FIELDS, "token": OPTOUT_TOKEN}.items()}
    status, answer = call(routes.optout, optout_event("GET", query=query))
    assert status == 500 and "send again" in answer["error"]


# ---- fuzz: no 5xx, no value echoed, nothing queued on a 4xx (11.8) ---------------------------------------------

MARK = "zq"  # every generated text carries it: finding it in an answer means a value was echoed
_texts = st.text(max_size=30).map(lambda t: f"{MARK}{t}")
_values = st.one_of(
    _texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.sampled_from(
        [
            "9007199254740993",
            "1e3",
            "0x10",
            "١٢٣",
            "jane.private@localhost",
            '"jane private"@example.com',
            "bob@[10.0.0.1]",
            "+32 470 12 34 56",
            "2999-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "zq-not-a-date",
            "email.unsubscribe",
            NEWS,
            "com.apsis1.channels.sms",
        ]
    ),
)
_field_names = st.sampled_from(
    ["event", "profile_key", "email", "mobile", "topic_discriminator", "channel_discriminator", "occurred_at", "x"]
)
_bodies = st.one_of(
    st.dictionaries(_field_names, _values, max_size=7).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=60),
    st.dictionaries(_field_names, _texts, max_size=7).map(lambda d: urlencode(d).encode()),
)
_queries = st.dictionaries(_field_names, st.lists(_texts, min_size=1, max_size=2), max_size=7)
#: distinctive sampled values that must not come back either (others, like event names, legitimately do)
_PERSONAL = ("9007199254740993", "jane.private", "jane private", "bob@", "470 12 34", "2999-01-01")


def _echoed(text: str) -> bool:
    return MARK in text or any(p in text for p in _PERSONAL)


@hsettings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST"]),
    body=_bodies,
    query=_queries,
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", None]),
    token_in=st.sampled_from(["header", "query", "none"]),
    base64_body=st.booleans(),
)
def test_fuzz_the_optout_route(
    routes: Routes,
    method: str,
    body: bytes,
    query: dict[str, list[str]],
    content_type: str | None,
    token_in: str,
    base64_body: bool,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if token_in == "header":
        headers["X-Apsis-Webhook-Token"] = OPTOUT_TOKEN
    elif token_in == "query":
        query = {**query, "token": [OPTOUT_TOKEN]}
    if not base64_body:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            base64_body = True
    before = routes.log.tell()
    event = optout_event(method, body=body, headers=headers, query=query or None, base64_body=base64_body)
    status, answer = call(routes.optout, event)
    assert status < 500, answer
    log = routes.log.getvalue()[before:]
    assert OPTOUT_TOKEN not in log and OPTOUT_TOKEN not in json.dumps(answer)
    if status >= 400:
        assert routes.depth(routes.optout_queue) == 0
        assert not _echoed(json.dumps(answer)), answer
        warnings = [line for line in log.splitlines() if '"opt-out ' in line]
        assert warnings and not any(_echoed(line) for line in warnings), warnings
    else:
        routes.messages(routes.optout_queue)  # drain, so the next example starts empty


@hsettings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.one_of(_values, st.integers(min_value=1, max_value=2**54), st.sampled_from(["2", 2.0, 10**30, True])),
    date=st.one_of(_values, st.sampled_from(["2026-01-01T10:00:00Z", "2026-01-01T12:00:00+02:00", "x", ""])),
    operation=st.sampled_from(["Create", "Update", "Delete", "update", ""]),
    table=st.sampled_from([11000, "11000", 10000, 11000.0]),
)
def test_fuzz_the_webhook_route(routes: Routes, key: Any, date: Any, operation: str, table: Any) -> None:
    body = json.dumps({"records": [{"table": table, "key": key, "operation": operation, "date": date}]}).encode()
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert status < 500, answer
    if status >= 400:
        assert routes.depth(routes.contact_queue) == 0
        assert not _echoed(json.dumps(answer)), answer
    else:
        messages = routes.messages(routes.contact_queue)
        number = None if isinstance(key, bool) else whole_number(key)
        if messages:  # queued only what names a contact: a whole key in range (123, 123.0, "123"); whatever the
            # date or operation says (the worker refetches the person and orders by Efficy's own change stamp)
            assert whole_number(table) == 11000, table
            assert number is not None and 1 <= number <= MAX_KEY, key
        elif whole_number(table) == 11000 and number is not None and 1 <= number <= MAX_KEY:
            raise AssertionError(f"a readable contact record was not queued: {date!r} {operation!r}")
        for message in messages:
            assert message["person_key"] == number


def test_an_empty_secret_is_a_500_for_the_caller_to_send_again_on_both_routes(
    routes: Routes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an empty key anyone could sign a webhook; and a 401 blamed the caller for our configuration."""
    from efficy_sync.webhook_auth import sign

    stamp = str(int(__import__("time").time()))
    body = b'{"records": [{"table": 11000, "key": 1, "operation": "Update"}]}'
    forged = {"X-Efficy-Timestamp": stamp, "X-Efficy-Signature": sign("", stamp, body)}
    for name in SECRETS:  # blank in Secrets Manager (which refuses ""), so a fresh read finds no value either
        boto3.client("secretsmanager", region_name=REGION).put_secret_value(SecretId=name, SecretString=" ")
    secrets.reset()
    status, answer = call(routes.webhook, webhook_event("acme", body, forged))
    assert status == 500, answer
    assert routes.depth(routes.contact_queue) == 0
    optout = json.dumps({"event": "email.unsubscribe", "profile_key": "1", "topic_discriminator": "x"}).encode()
    status, answer = call(routes.optout, optout_event("POST", body=optout, headers={"X-Apsis-Webhook-Token": ""}))
    assert status == 500, answer
    assert "secret" in routes.log.getvalue() and "empty" in routes.log.getvalue()
