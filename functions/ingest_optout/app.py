"""/integrations/{integration_id}/apsis/optout: APSIS One's unsubscribe automation in, one SQS message out.

POST (JSON or form body) and GET (the fields as URL parameters), with the token as the header or the `token`
URL parameter: what APSIS One's Webhook node can send. Nothing here logs the URL, the query or a field's value.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from efficy_sync import gc_policy
from efficy_sync.aws import client
from efficy_sync.correlation import message_attributes
from efficy_sync.inbound import BodyEncodingError, request_body
from efficy_sync.observability import MetricUnit, logger, metrics
from efficy_sync.optout_event import OptOutAuthError, OptOutPayloadError, check_token
from efficy_sync.optout_intake import OptOutMessage, accept
from efficy_sync.routes import SEND_AGAIN, answer_refusals, integration, rejected, reply
from efficy_sync.secrets import accepted_secret
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.tracing import annotate, capture_handler

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

app = APIGatewayRestResolver()
# an applied version is seen at once (its number is read each time; the body only when it changed)
configs = ConfigStore(settings().config_table, check_version=True)
answer_refusals(app, route="opt-out", auth_error=OptOutAuthError, rejected_metric="OptOutRejected")


@app.exception_handler(BodyEncodingError)
def _undecodable(exc: BodyEncodingError) -> Response:
    rejected("OptOutRejected")
    logger.warning("opt-out malformed: %s", exc)
    return reply(400, {"error": f"malformed opt-out: {exc}", "field": "body"})


@app.exception_handler(OptOutPayloadError)
def _malformed(exc: OptOutPayloadError) -> Response:
    rejected("OptOutRejected")
    logger.warning("opt-out malformed: %s", exc)
    return reply(400, {"error": f"malformed opt-out: {exc}", "field": exc.field})


@app.exception_handler(Exception)
def _not_queued(exc: Exception) -> Response:
    """The secret store or SQS failed: APSIS One's Webhook node retries a call that did not get a 2xx (for how
    long is not documented, hence the metric and OptOutNotQueuedAlarm: a 500 answered is not a Lambda error)."""
    metrics.add_metric(name="OptOutEnqueueFailed", unit=MetricUnit.Count, value=1)
    logger.exception("opt-out not queued")
    return reply(SEND_AGAIN, {"error": "could not queue the opt-out; send again"})


def _send(message: OptOutMessage) -> None:
    """SendMessage raises unless SQS stored the message (boto3 retries throttling and 5xx itself). The request
    id is the opt-out's correlation id: the write-back's log lines and stored outcome carry it."""
    client("sqs").send_message(
        QueueUrl=settings().optout_queue_url,
        MessageBody=message.model_dump_json(),
        MessageAttributes=message_attributes(app.current_event.request_context.request_id),
    )


def _query() -> dict[str, Any]:
    """URL parameters, every value of a repeated one (so a field given twice is refused, not half-read)."""
    event = app.current_event
    multi = event.get("multiValueQueryStringParameters") or {}
    single = event.query_string_parameters or {}
    return {name: multi.get(name) or value for name, value in single.items()}


def _optout(integration_id: str) -> Response:
    cfg = integration(configs, integration_id)
    event = app.current_event
    annotate(event.request_context.request_id)
    body = request_body(event.body, event.is_base64_encoded) if event.http_method != "GET" else b""
    query = _query()
    token = accepted_secret(
        cfg.apsis.optout_token_secret,
        lambda t: check_token(event.headers, cfg.apsis.optout_token_header, t, query),
        OptOutAuthError,
    )
    result = accept(cfg, event.headers, body, token, _send, query=query)
    for time_fix in result.time_fixes:
        if time_fix == "future":
            metrics.add_metric(name="OptOutFutureTime", unit=MetricUnit.Count, value=1)
            logger.warning("opt-out occurred_at is later than its receipt: the receive time was recorded instead")
        elif time_fix == "old":
            metrics.add_metric(name="OptOutOldTime", unit=MetricUnit.Count, value=1)
            logger.warning(
                "opt-out occurred_at is older than apsis.optout_max_age_hours: the receive time was recorded instead",
                extra={"max_age_hours": cfg.apsis.optout_max_age_hours},
            )
    answer: dict[str, Any] = {"accepted": result.accepted}
    if result.ignored_events:
        # each ignored event has its own warning (optout_intake.report_ignored)
        metrics.add_metric(name="OptOutIgnored", unit=MetricUnit.Count, value=result.ignored_events)
        answer["ignored"] = result.ignored
    if result.accepted:
        metrics.add_metric(name="OptOutAccepted", unit=MetricUnit.Count, value=result.accepted)
    if result.unmapped_events:
        metrics.add_metric(name="OptOutUnmapped", unit=MetricUnit.Count, value=result.unmapped_events)
        logger.info("opt-out accepted, to be recorded only: %s", result.unmapped)
        answer["unmapped"] = result.unmapped
    if result.refused:  # events of an array refused while the others were taken: the node's owner must see them
        rejected("OptOutRejected", len(result.refused))
        logger.warning("opt-out events refused: %s", "; ".join(r["error"] for r in result.refused))
        answer["refused"] = result.refused
    logger.info("opt-out accepted", extra={"subscriptions": result.accepted})
    return reply(202, answer)


@app.post("/integrations/<integration_id>/apsis/optout")
def apsis_optout(integration_id: str) -> Response:
    return _optout(integration_id)


@app.get("/integrations/<integration_id>/apsis/optout")
def apsis_optout_get(integration_id: str) -> Response:
    return _optout(integration_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@capture_handler
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
