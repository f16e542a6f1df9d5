"""Logger and metrics, created once and imported by every handler (powertools: JSON logs, EMF metrics).

Log fields identify a person by `pii.hash_key(...)`, never by e-mail or phone number. The formatter is the
last line of defence: whatever a log line carries (a message, extra keys, an exception's text), e-mail
addresses and international phone numbers are masked before it is written, and so are the values of fields
named like personal data (EMAIL1, MOBILE, "email", "phone" ...).

Metrics: every handler decorated with `@metrics.log_metrics` also publishes, at each flush, the API calls the
clients made during the invocation (ApsisCalls, Apsis429, Apsis5xx, ApsisTimeouts, and the same for Efficy),
read from `clients.meter`, so no handler has to remember to count them.

Per integration: the key counters (INTEGRATION_METRICS) are also published with the dimensions
{service, integration_id}, one EMF document per integration at each flush, so one integration's failures do
not hide in the others' volume. Each metric x integration is a custom metric billed monthly, so only these
carry the dimension; the rest stay per deployment. API calls have no integration of their own (the clients'
meter counts per API): they are attributed only when the invocation served exactly one integration (a
full-sync page always does, a real-time batch when all its changes belong to one integration).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sys
import threading
from collections import defaultdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from . import correlation
from .clients.meter import meter
from .pii import looks_like_pii, mask_email, mask_phone, mask_value

SERVICE = "efficy-sync"
NAMESPACE = "EfficySync"

# An address: a dot-atom or quoted local part (RFC 5321: "jane private"@x, o'brien@x, jane+tag@x), '@' or its
# URL encoding, and a domain with or without dots (jane@localhost) or an address literal (bob@[10.0.0.1]).
_EMAIL = re.compile(
    # the unquoted mailbox starts where a run of mailbox characters starts (the look-behind): tried from every
    # position of a long run, the match was quadratic (seconds for one log line of a large body)
    r"""(?:"[^"\r\n]{1,64}"|(?<![\w!#$%&'*+/=?^`{|}~.-])[\w!#$%&'*+/=?^`{|}~.-]+)(?:@|%40)"""
    r"""(?:\[[^\]\s]{1,64}\]|[\w-]+(?:\.[\w-]+)*)""",
    re.IGNORECASE,
)
# A phone number: '+' or a leading 0 ('00' international prefix or a national number), digit groups separated
# by one space, dot, dash, slash or parentheses ("+32 (0)470 12 34 56", "0032 470 12 34 56", "0470/12.34.56").
# Candidates are then checked by their digits (_phone_digits_ok) so ids, ARNs, dates and decimals stay readable.
_PHONE = re.compile(r"(?<![\w+.\-/@])(?:\+|\((?=0)|(?=0))\d+(?:(?:[ \u00a0.\-/]|\s?\(\s?|\s?\)\s?)\d+)*\)?(?![\w@])")
_DATE_LIKE = re.compile(r"^\(?\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b|^0\.\d+$")
# Keys that hold a person's contact data whatever their case: the opt-out body's "email" / "mobile", Efficy's
# EMAIL1 / MOBILE / PHONE1 ...; powertools' own keys (function_name, service, ...) are lower case and not these.
_CONTACT_KEY = re.compile(r"(?i)e-?mail\d*|email_?address|mobile\d*|phone\d*|gsm\d*|msisdn|fax\d*")
# Keys that hold a credential: the url_token mode's `token` query parameter, the opt-out token header, webhook
# signatures and secrets, Authorization... (powertools' event logging writes headers and query parameters).
_SECRET_KEY = re.compile(r"(?i)token|secret|signature|authori[sz]ation|api[-_]?key|password|passwd|cookie|x-[\w-]*-key")
SECRET_MASK = "***"


def _phone_digits_ok(text: str) -> bool:
    """A phone number has 8 to 15 digits after an international prefix, or 9 to 11 for a national one."""
    if _DATE_LIKE.match(text):
        return False
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        return 8 <= len(digits) <= 15
    if digits.startswith("00"):
        return 8 <= len(digits) - 2 <= 15
    return 9 <= len(digits) <= 11


def _is_contact_key(key: str | None) -> bool:
    return key is not None and bool(_CONTACT_KEY.fullmatch(key) or (key.isupper() and looks_like_pii(key)))


def _is_secret_key(key: str | None) -> bool:
    return key is not None and bool(_SECRET_KEY.search(key))


#: a name=value pair of a form body or a query string ("event=x&token=...&mobile=32470123456")
_PAIR = re.compile(r"(?<![\w.\-])([A-Za-z_][\w.\-]*)=([^&?#\s\"']*)")


def _pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if value and _is_secret_key(name):
        return f"{name}={SECRET_MASK}"
    if value and _is_contact_key(name):
        return f"{name}={mask_value(name.upper(), value)}"
    return match.group()


#: a "name": value pair of JSON text (a request body logged whole as one string), the value a string or number
_JSON_PAIR = re.compile(r'"([A-Za-z_][\w.\-]*)"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+\-]*|\[[^\[\]{}]*\])')


def _json_pair(match: re.Match[str]) -> str:
    name, colon, raw = match.group(1), match.group(2), match.group(3)
    if raw.startswith("["):  # a list of values ("mobile": ["3247..."]): each masked, or the list as a whole
        if not (_is_secret_key(name) or _is_contact_key(name)):
            return match.group()
        try:
            items = json.loads(raw)
        except ValueError:
            return f'"{name}"{colon}"{SECRET_MASK}"'
        masked = [SECRET_MASK if _is_secret_key(name) else mask_value(name.upper(), item) for item in items]
        return f'"{name}"{colon}{json.dumps(masked)}'
    value = raw[1:-1] if raw.startswith('"') else raw
    if value and _is_secret_key(name):
        return f'"{name}"{colon}"{SECRET_MASK}"'
    if value and _is_contact_key(name):
        return f'"{name}"{colon}"{mask_value(name.upper(), value)}"'
    return match.group()


#: requests' refusal of a header value it cannot send (InvalidHeader: "... in header value: 'the-api-key\\n'"): the
#: value is one of our credential headers (Efficy's API key from a secret put with its trailing newline, APSIS's
#: Bearer token), and the message, chained into every traceback of the call, named it in clear
_HEADER_VALUE = re.compile(r"""(in header value: )(?:b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*"|\S+)""")


def scrub_text(text: str) -> str:
    """Masks every e-mail address and phone number in free text (messages, exception texts, API answers), and
    the values of credential and contact fields in url-encoded and JSON text: powertools' event logging writes
    a request body or a raw query string whole, as one string, where `token=` and a mobile written without +
    or 0 (as APSIS gives phones back) would pass."""
    if "header value" in text:
        text = _HEADER_VALUE.sub(rf"\1{SECRET_MASK}", text)
    if "=" in text:
        text = _PAIR.sub(_pair, text)
    if '"' in text and ":" in text:
        text = _JSON_PAIR.sub(_json_pair, text)
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group().replace("%40", "@")), text)
    return _PHONE.sub(lambda m: mask_phone(m.group()) if _phone_digits_ok(m.group()) else m.group(), text)


#: a person's key in a request path (APSIS's /profiles/{key}) or query (Efficy REST `ids=`)
_KEY_IN_URL = re.compile(r"(/profiles/)([^/?\s'\"]+)|((?:^|[?&])ids=)([^&\s'\"]+)")


def keys_hashed(text: str) -> str:
    """`text` with the person keys of API URLs as their hash_key: requests' HTTPError text and a traceback
    name the URL ("404 Client Error: Not Found for url: .../profiles/123/..."), and README promises logs carry
    a hash of the key, never the key (an address, were it the keyspace)."""
    if "/profiles/" not in text and "ids=" not in text:
        return text
    from .pii import hash_key

    def keyed(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1) + hash_key(match.group(2))
        return match.group(3) + ",".join(hash_key(k) for k in match.group(4).split(","))

    return _KEY_IN_URL.sub(keyed, text)


def _body_as_text(event: dict[Any, Any]) -> dict[Any, Any]:
    """An API Gateway event whose body is base64 (the API takes every body as binary) with the body decoded, so
    that it is scrubbed like any text: as base64, powertools' event logging wrote the personal data it holds,
    encoded but no less readable. Undecodable bytes are replaced (it is only a log)."""
    body = event.get("body")
    if event.get("isBase64Encoded") is not True or not isinstance(body, str):
        return event
    try:
        text = base64.b64decode(body, validate=True).decode("utf-8", "replace")
    except ValueError:
        return {**event, "body": SECRET_MASK}  # not base64 after all: nothing of it is kept
    return {**event, "body": text, "isBase64Encoded": False, "bodyLoggedDecoded": True}


#: the request headers whose values a log may show: API Gateway's, CloudFront's and HTTP's own. Every other
#: header's value is masked, whatever its name: the webhook's credential headers are configurable
#: (`secret_header`, `signature_header`, `optout_token_header`), so a name chosen without "secret", "token" or
#: "key" in it passed the credential pattern and, with event logging on, its value was logged in clear.
_SHOWN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "via",
        "x-amz-cf-id",
        "x-amzn-trace-id",
        "x-efficy-timestamp",
        "x-forwarded-for",
        "x-forwarded-port",
        "x-forwarded-proto",
    }
)
_HEADER_MAPS = frozenset({"headers", "multiValueHeaders"})


def _headers_shown(headers: dict[Any, Any]) -> dict[Any, Any]:
    """An event's header map with the value of every header outside _SHOWN_HEADERS (and cloudfront-*) masked."""
    return {
        name: value
        if str(name).lower() in _SHOWN_HEADERS or str(name).lower().startswith("cloudfront-") or value in (None, "")
        else SECRET_MASK
        for name, value in headers.items()
    }


def scrub(value: Any, key: str | None = None) -> Any:
    """A log record's value with personal data masked: by key for contact fields, by shape everywhere else;
    credentials (by key, and every request header but the harmless ones) are replaced whole."""
    if isinstance(value, dict):
        if key in _HEADER_MAPS:
            value = _headers_shown(value)
        return {k: scrub(v, str(k)) for k, v in _body_as_text(value).items()}
    if isinstance(value, list | tuple):
        return [scrub(v, key) for v in value]
    if _is_secret_key(key) and value not in (None, "") and not isinstance(value, bool | int | float):
        return SECRET_MASK
    if _is_contact_key(key) and value not in (None, "") and not isinstance(value, bool):
        return mask_value(str(key).upper(), value)
    if isinstance(value, str):
        return scrub_text(keys_hashed(value))
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub_text(keys_hashed(str(value)))  # an exception or any object: the JSON encoder writes str() of it


class PiiSafeFormatter(LambdaPowertoolsFormatter):
    """powertools' JSON formatter, with `scrub` applied to the whole record just before it is written."""

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        return super().serialize(scrub(log))


#: the counters published per integration as well (dimension integration_id); see the module docstring
INTEGRATION_METRICS = frozenset(
    {
        "PersonsSynced",
        "PersonsSkipped",
        "PersonsFailed",
        # every real-time outcome but a failure (synced, unchanged, skipped, deleted, stale, parked): what the
        # "webhooks but nothing syncs" alarm weighs the webhooks against (an edit of an unmapped field is
        # processed fine and changes nothing: it was no PersonsSynced, and three hours of them raised it)
        "PersonsProcessed",
        "WebhookRecordsAccepted",
        "OptOutsWrittenBack",
        "ApsisCalls",
        "Apsis429",
    }
)
INTEGRATION_DIMENSION = "integration_id"


class IntegrationCounts:
    """Counts of INTEGRATION_METRICS per integration since the last flush (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._seen: set[str] = set()

    def add(self, integration_id: str, name: str, value: float) -> None:
        with self._lock:
            self._seen.add(integration_id)
            if name in INTEGRATION_METRICS:
                self._counts[(integration_id, name)] += value

    def take(self, api_counts: dict[str, int]) -> dict[str, dict[str, float]]:
        """{integration: {metric: value}}; the API counts go to the one integration served, if only one was."""
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for (integration_id, name), value in self._counts.items():
                out.setdefault(integration_id, {})[name] = value
            if len(self._seen) == 1:
                (only,) = self._seen
                for name, value in api_counts.items():
                    if name in INTEGRATION_METRICS:
                        out.setdefault(only, {})[name] = value
            self._counts.clear()
            self._seen.clear()
        return out


integration_counts = IntegrationCounts()


def count(name: str, value: float = 1, *, integration_id: str | None = None) -> None:
    """Adds to a counter of this invocation: per deployment as always, and per integration for the counters of
    INTEGRATION_METRICS (naming the integration also attributes the invocation's API calls to it)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if integration_id:
        integration_counts.add(integration_id, name, value)


def serving(integration_id: str) -> None:
    """The invocation works for this integration (whether or not it counts anything for it): API calls are
    attributed to an integration only when it is the only one served."""
    integration_counts.add(integration_id, "", 0)


def flush_integration_metrics(api_counts: dict[str, int]) -> None:
    """One EMF document per integration, with the dimensions {service, integration_id}."""
    for integration_id, values in integration_counts.take(api_counts).items():
        provider = AmazonCloudWatchEMFProvider(
            metric_set={}, dimension_set={}, metadata_set={}, namespace=NAMESPACE, service=SERVICE
        )
        provider.add_dimension(name=INTEGRATION_DIMENSION, value=integration_id)
        for name, value in sorted(values.items()):
            provider.add_metric(name=name, unit=MetricUnit.Count, value=value)
        provider.flush_metrics()


class _InvocationMetrics(AmazonCloudWatchEMFProvider):
    """EMF provider that adds the clients' API call counts to every flush (see the module docstring), and
    publishes the per-integration counters beside them."""

    _adding = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        """One value at a time: powertools builds a name's entry on its first value without a lock (read the
        set, append, store), so a page's threads counting a name first at once each stored their own entry and
        all values but one were lost (EmailConflicts, ExistingOptOutsKept: counted from the person threads)."""
        with self._adding:
            super().add_metric(*args, **kwargs)

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        api_counts = add_api_call_metrics(self)
        flush_integration_metrics(api_counts)
        if self.metric_set or raise_on_empty_metrics:  # an invocation that counted nothing prints nothing (and
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)  # no warning in every log)
        # powertools clears the set only when it prints it: with metrics disabled (the local stack, a test) a
        # warm process would keep every invocation's values and print them all once metrics are enabled.
        self.clear_metrics()

    def add_cold_start_metric(self, context: Any) -> None:
        """powertools writes the ColdStart metric through `single_metric`, which ignores
        POWERTOOLS_METRICS_DISABLED; honour it here so a disabled run prints no EMF at all."""
        if not is_metrics_disabled():
            super().add_cold_start_metric(context)


#: (api, kind) of clients.meter -> metric name
API_METRICS = {
    (api, kind): f"{label}{suffix}"
    for api, label in (("apsis", "Apsis"), ("efficy", "Efficy"))
    for kind, suffix in (("calls", "Calls"), ("429", "429"), ("5xx", "5xx"), ("timeouts", "Timeouts"))
}


def add_api_call_metrics(target: Any) -> dict[str, int]:
    """Moves the meter's counts since the last flush into `target` (anything with add_metric); returns them."""
    added: dict[str, int] = {}
    for key, count in meter.take().items():
        name = API_METRICS.get(key)
        if name:
            target.add_metric(name=name, unit=MetricUnit.Count, value=count)
            added[name] = count
    return added


def _log_stream() -> Any:
    """stdout on Lambda (powertools' default); stderr where EFFICY_SYNC_LOG_STREAM says so: the CLI sets it, so
    a warning from the library never lands in a command's result (`--output json` is a JSON document on stdout)."""
    return sys.stderr if os.environ.get("EFFICY_SYNC_LOG_STREAM") == "stderr" else sys.stdout


logger = Logger(service=SERVICE, logger_formatter=PiiSafeFormatter(), stream=_log_stream())


class _UrlScrubbing(logging.Filter):
    """urllib3 logs each retry with the request's path and query ("Retrying (...) after connection broken by
    ...: /v2/audience/keyspaces/.../profiles/123/..."), through the root logger, outside our formatter: the
    person's key (or an e-mail, were it a key) went to the logs in clear. Keys become their hash_key, and the
    rest goes through scrub_text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub_text(keys_hashed(record.getMessage())), ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_UrlScrubbing())
_shared = Metrics(namespace=NAMESPACE, service=SERVICE)  # powertools keeps metric sets at class level
metrics = Metrics(
    provider=_InvocationMetrics(
        metric_set=_shared.metric_set,
        dimension_set=_shared.dimension_set,
        metadata_set=_shared.metadata_set,
        default_dimensions=_shared.default_dimensions,
        namespace=NAMESPACE,
        service=SERVICE,
    )
)


def _log_correlation(correlation_id: str | None) -> None:
    """A correlation scope began or ended (efficy_sync.correlation): the key is thread-safe (a context
    variable), so it is on this record's lines only and gone when the record is done."""
    if correlation_id:
        logger.thread_safe_append_keys(correlation_id=correlation_id)
    else:
        logger.thread_safe_remove_keys([correlation.KEY])


correlation.add_hook(_log_correlation)

__all__ = [
    "MetricUnit",
    "PiiSafeFormatter",
    "add_api_call_metrics",
    "count",
    "logger",
    "metrics",
    "scrub",
    "scrub_text",
    "serving",
]
