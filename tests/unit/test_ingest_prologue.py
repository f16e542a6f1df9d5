"""The prologue both public routes share (efficy_sync/routes.py), driven through a powertools resolver with an
API Gateway proxy event: an unknown integration is a 404 naming it, a refused caller a 401 that is counted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from efficy_sync import routes
from efficy_sync.store.configs import UnknownIntegration


class AuthError(Exception):
    pass


class Configs:
    """ConfigStore.get as the routes use it: one known integration."""

    def get(self, integration_id: str) -> Any:
        if integration_id != "acme":
            raise UnknownIntegration(integration_id)
        return {"integration_id": integration_id}


def _app(counted: list[str], monkeypatch: pytest.MonkeyPatch) -> APIGatewayRestResolver:
    monkeypatch.setattr(routes, "rejected", counted.append)
    app = APIGatewayRestResolver()
    routes.answer_refusals(app, route="test", auth_error=AuthError, rejected_metric="TestRejected")

    @app.post("/integrations/<integration_id>/in")
    def route(integration_id: str) -> Response:
        cfg = routes.integration(Configs(), integration_id)
        if app.current_event.headers.get("token") != "right":
            raise AuthError("wrong token header")
        return routes.reply(202, {"for": cfg["integration_id"]})

    return app


def _call(app: APIGatewayRestResolver, integration_id: str, token: str) -> tuple[int, dict[str, Any]]:
    event = {
        "resource": "/integrations/{integration_id}/in",
        "path": f"/integrations/{integration_id}/in",
        "httpMethod": "POST",
        "headers": {"token": token},
        "multiValueHeaders": {"token": [token]},
        "queryStringParameters": None,
        "pathParameters": {"integration_id": integration_id},
        "requestContext": {"requestId": "r-1", "stage": "v1", "httpMethod": "POST", "path": "/in"},
        "body": "{}",
        "isBase64Encoded": False,
    }
    answer = app.resolve(event, {})
    return answer["statusCode"], json.loads(answer["body"])


def test_an_unknown_integration_is_a_404_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []
    status, body = _call(_app(counted, monkeypatch), "nobody", "right")
    assert (status, body) == (404, {"error": "unknown integration 'nobody'"})
    assert counted == []  # a wrong URL is not a refused caller


def test_a_refused_caller_is_a_401_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []
    status, body = _call(_app(counted, monkeypatch), "acme", "wrong")
    assert (status, body) == (401, {"error": "wrong token header"})
    assert counted == ["TestRejected"]


def test_a_known_integration_and_caller_reach_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []
    assert _call(_app(counted, monkeypatch), "acme", "right") == (202, {"for": "acme"})
    assert counted == []
