"""POST /integrations/{integration_id}/efficy/webhook: Efficy's change notifications in, SQS messages out.

In `url_token` mode the secret is in the query string: nothing here logs the URL or the query, and the log
formatter masks a `token` key wherever powertools' event logging would show it."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from efficy_sync import gc_policy
from efficy_sync.correlation import scope
from efficy_sync.inbound import BodyEncodingError, request_body
from efficy_sync.ingest import BundlePolicy, accept, authenticate
from efficy_sync.observability import MetricUnit, count, logger, metrics
from efficy_sync.pii import hash_key
from efficy_sync.queue import EnqueueError
from efficy_sync.routes import SEND_AGAIN, answer_refusals, integration, rejected, reply
from efficy_sync.secrets import accepted_secret
from efficy_sync.settings import settings
from efficy_sync.store.configs import ConfigStore
from efficy_sync.tracing import annotate, capture_handler
from efficy_sync.webhook import WebhookPayloadError
from efficy_sync.webhook_auth import WebhookAuthError

gc_policy.apply()  # fewer, larger young collections: gc_policy says why

app = APIGatewayRestResolver()
# an applied version is seen at once (its number is read each time; the body only when it changed): with a
# minute's cache, a switch of efficy.auth.mode refused every webhook sent the new way for that minute (401), and
# the sender's few retries gave up
configs = ConfigStore(settings().config_table, check_version=True)
BUNDLES = BundlePolicy(
    queue_url=settings().webhook_bundle_queue_url,
    over=settings().webhook_bundle_over,
    max_bytes=settings().webhook_bundle_bytes,
)
answer_refusals(app, route="webhook", auth_error=WebhookAuthError, rejected_metric="WebhookRejected")


@app.exception_handler(BodyEncodingError)
def _undecodable(exc: BodyEncodingError) -> Response:
    rejected("WebhookRejected")
    return reply(400, {"error": f"malformed webhook: {exc}"})


@app.exception_handler(WebhookPayloadError)
def _malformed(exc: WebhookPayloadError) -> Response:
    rejected("WebhookRejected")
    logger.warning("webhook malformed: %s", exc)
    return reply(400, {"error": f"malformed webhook: {exc}"})


@app.exception_handler(Exception)
def _not_queued(exc: Exception) -> Response:
    """EnqueueError, or the secret store or another AWS call failed: an outage, and Efficy's retry is harmless."""
    metrics.add_metric(name="WebhookEnqueueFailed", unit=MetricUnit.Count, value=1)
    if isinstance(exc, EnqueueError):
        logger.error("webhook not queued: %s", exc)
    else:
        logger.exception("webhook not queued")
    return reply(SEND_AGAIN, {"error": "could not queue the changes; send again"})


@app.post("/integrations/<integration_id>/efficy/webhook")
def efficy_webhook(integration_id: str) -> Response:
    cfg = integration(configs, integration_id)
    event = app.current_event
    body = request_body(event.body, event.is_base64_encoded)
    if len(body) > settings().max_webhook_bytes:
        rejected("WebhookRejected")
        return reply(
            413,
            {
                "error": f"body of {len(body)} bytes is over the {settings().max_webhook_bytes} byte limit; send smaller batches"
            },
        )
    query = event.query_string_parameters
    secret = accepted_secret(
        cfg.efficy.webhook_secret_secret, lambda s: authenticate(cfg, event.headers, body, s, query), WebhookAuthError
    )
    request_id = event.request_context.request_id
    annotate(request_id)  # each change's id is "<request id>/<n>": the trace is found by the request's
    result = accept(
        cfg,
        settings().contact_queue_url,
        event.headers,
        body,
        secret,
        query,
        request_id=request_id,
        bundles=BUNDLES,
    )
    count("WebhookRecordsAccepted", result.records, integration_id=cfg.integration_id)
    if result.skipped_other_tables:
        metrics.add_metric(name="WebhookRecordsSkipped", unit=MetricUnit.Count, value=result.skipped_other_tables)
    logger.info(
        "webhook accepted",
        extra={
            "records": result.records,
            "persons": result.accepted,
            "sqs_batches": result.enqueue.batch_calls,
            "bundled": result.bundled,
        },
    )
    # One line per queued change, under its own correlation id: where an operator's search for one change starts.
    # A bundled webhook's lines are the splitter's, written when each change reaches the FIFO queue.
    for change in [] if result.bundled else result.changes:
        with scope(change.correlation_id):
            logger.info("change queued", extra={"person": hash_key(change.person_key), "operation": change.operation})
    answer = {"accepted": result.accepted, "records": result.records, "skipped": result.skipped_other_tables}
    if result.relations or result.relations_unread:  # efficy.relation_tables: how many named their contact
        answer.update(relations=result.relations, relations_unread=result.relations_unread)
    if cfg.efficy.auth.accepted_status == 204:  # the generic-connector sender counts only a 204 as delivered
        return Response(status_code=204, body=None)
    # contact records that could not be read were left out (ingest.py logs and counts them): the caller sees how many
    return reply(202, {**answer, "invalid": result.skipped_invalid} if result.skipped_invalid else answer)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@capture_handler
@metrics.log_metrics(capture_cold_start_metric=True)  # the webhook's latency is what Efficy waits for
def handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
