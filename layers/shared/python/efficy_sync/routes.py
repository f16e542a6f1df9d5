"""What both public routes (Efficy's webhook, APSIS One's opt-out) answer the same way: the integration named in
the path or 404, and a caller that does not prove who it is 401, counted and logged without its credentials.

Each route calls `integration()` first and registers `answer_refusals()` on its resolver; its own errors (a
malformed body, a queue that did not take the message) it maps with powertools' `@app.exception_handler`
beside them. Light on purpose: both ingest Lambdas import it on their cold path.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types

from .config import IntegrationConfig
from .observability import MetricUnit, logger, metrics
from .store.configs import ConfigStore, UnknownIntegration


class IntegrationNotFound(Exception):
    """No config for the path's integration id: answered 404 naming it."""

    def __init__(self, integration_id: str) -> None:
        super().__init__(f"unknown integration {integration_id!r}")


#: The status of "not queued: send again" (SQS, the secret store or the config table failed). 500, not 503: the
#: generic-connector webhook sender (APSIS's own implementation of the spec that Efficy 12.1's connector follows,
#: contracts/efficy.md section 10) retries only 429, 500 and 504 and marks any other status failed, for good: a
#: 503 during an SQS outage lost the change. A sender that retries any 5xx (section 9's assumption) retries a
#: 500 alike. API Gateway's own answer to a Lambda cut off by its timeout is a 504, also retried.
SEND_AGAIN = 500


def reply(status: int, payload: dict[str, Any]) -> Response[Any]:
    """A JSON answer."""
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=payload)


def rejected(metric: str, n: int = 1) -> None:
    """Counts a refused call, or `n` refused events of one (the route's `...Rejected` metric)."""
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=n)


def integration(configs: ConfigStore, integration_id: str) -> IntegrationConfig:
    """The prologue of a route: the path's integration, its id on every log line from here on;
    IntegrationNotFound (404) when it has no config."""
    logger.append_keys(integration_id=integration_id)
    try:
        return configs.get(integration_id)
    except UnknownIntegration:
        raise IntegrationNotFound(integration_id) from None


def answer_refusals(
    app: APIGatewayRestResolver, *, route: str, auth_error: type[Exception], rejected_metric: str
) -> None:
    """Registers the 404 of an unknown integration and the 401 of `auth_error` (counted in `rejected_metric`,
    logged as "`route` rejected") on the route's resolver."""

    def _integration_not_found(exc: IntegrationNotFound) -> Response[Any]:
        return reply(404, {"error": str(exc)})

    def _unauthorised(exc: Exception) -> Response[Any]:
        rejected(rejected_metric)
        logger.warning("%s rejected: %s", route, exc)
        return reply(401, {"error": str(exc)})

    # registered by call, not as decorators: powertools' exception_handler is not typed, and a decorator
    # returning Any would erase these handlers' types for the checker
    app.exception_handler(IntegrationNotFound)(_integration_not_found)
    app.exception_handler(auth_error)(_unauthorised)
