"""API Gateway's part, offline: HTTP requests become REST API proxy events for the handler template.yaml names.

The URL keeps AWS's shape (`<api_url>/integrations/{integration_id}/...` where api_url ends with the stage),
so scripts written against the local stack work against a deployed one.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import json
import logging
import socket
import threading
import time
import uuid
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from ..keepalive import KeepAliveHandler, stop_server
from .lambdas import FunctionRouter
from .template import ApiRoute

log = logging.getLogger("efficy_sync.local")
MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway REST payload limit
LAMBDA_MAX_REQUEST = 6 * 1024 * 1024  # synchronous Lambda invocation payload limit (the whole event)


class _QuietHandler(KeepAliveHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class ApiFront:
    def __init__(
        self,
        routes: list[ApiRoute],
        router: FunctionRouter,
        *,
        stage: str,
        port: int = 0,
        sock: socket.socket | None = None,
        binary_media_types: tuple[str, ...] = (),
    ) -> None:
        """`sock`: a listening socket reserved earlier (aws.reserve_port) to serve on, instead of binding `port`.
        `binary_media_types`: the API's BinaryMediaTypes; a body of one of them is passed base64-encoded, as
        API Gateway passes it, whether or not it is UTF-8 text."""
        self._binary_media_types = binary_media_types
        self._routes = routes
        self._router = router
        self._stage = stage
        self._port = port
        self._sock = sock
        self._server: BaseWSGIServer | None = None
        # Powertools' REST resolver keeps the request being served on a class attribute (BaseRouter.current_event):
        # right on Lambda, where a sandbox serves one event at a time, but in this one process a webhook served in
        # another thread would swap the opt-out route's event (its headers, its token) mid-request. So the front
        # serves one API invocation at a time, as one sandbox would.
        self._invoke_lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}/{self._stage}"

    def start(self) -> None:
        port = self._sock.getsockname()[1] if self._sock else self._port
        fd = self._sock.fileno() if self._sock else None
        self._server = make_server("127.0.0.1", port, self._wsgi, threaded=True, request_handler=_QuietHandler, fd=fd)
        if self._sock is not None:  # the server serves a duplicate of it
            self._sock.close()
            self._sock = None
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="api-front", daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            stop_server(self._server)
            self._server = None

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ, populate_request=False)  # no request <-> environ cycle (sims/base.py)
        return self._handle(request)(environ, start_response)

    def _handle(self, request: Request) -> Response:
        prefix = f"/{self._stage}"
        if not request.path.startswith(prefix + "/"):
            return _json({"message": "Not Found"}, 404)
        path = request.path[len(prefix) :]
        if (request.content_length or 0) > MAX_PAYLOAD:
            return _json({"message": "Request Too Long"}, 413)
        for route in self._routes:
            match = route.regex.match(path)
            if match and route.method == request.method:
                break
        else:
            return _json({"message": "Missing Authentication Token"}, 403)  # what API Gateway says
        body = request.get_data()
        if len(body) > MAX_PAYLOAD:
            return _json({"message": "Request Too Long"}, 413)
        event = self._event(request, route, path, match.groupdict(), body)
        if len(body) > LAMBDA_MAX_REQUEST:  # AWS fails the integration before our code runs
            return _json({"message": "Request payload exceeds the Lambda limit of 6 MB"}, 413)
        try:
            with self._invoke_lock:
                result = self._router.invoke(route.function, event)
        except Exception:
            log.exception("handler %s raised", route.function)
            return _json({"message": "Internal server error"}, 502)
        return _response(result)

    def _binary(self, content_type: str | None) -> bool:
        """API Gateway's choice: the request's media type (application/json, a REST API's default, when none is
        sent) matches one of the API's binary media types."""
        media = (content_type or "application/json").split(";")[0].strip().lower()
        return any(fnmatch.fnmatchcase(media, pattern.lower()) for pattern in self._binary_media_types)

    def _event(self, request: Request, route: ApiRoute, path: str, params: dict[str, str], body: bytes) -> dict:
        text, is_b64 = base64.b64encode(body).decode(), True
        if not self._binary(request.headers.get("Content-Type")):
            # not UTF-8: kept as base64 (a text API would alter it; the template's binary media types avoid that)
            with contextlib.suppress(UnicodeDecodeError):
                text, is_b64 = body.decode("utf-8"), False
        headers = {k: v for k, v in request.headers.items()}
        multi_headers = {k: request.headers.getlist(k) for k in headers}
        query = {k: v for k, v in request.args.items()} or None
        multi_query = {k: request.args.getlist(k) for k in request.args} or None
        now = time.time()
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": route.path,
                "httpMethod": request.method,
                "path": f"/{self._stage}{path}",
                "stage": self._stage,
                "requestId": str(uuid.uuid4()),
                "requestTimeEpoch": int(now * 1000),
                "accountId": "123456789012",
                "apiId": "local",
                "protocol": "HTTP/1.1",
                "identity": {"sourceIp": request.remote_addr or "127.0.0.1", "userAgent": request.user_agent.string},
            },
            "body": text if body else None,
            "isBase64Encoded": is_b64,
        }


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _response(result: Any) -> Response:
    if not isinstance(result, dict) or "statusCode" not in result:
        return _json({"message": "Internal server error"}, 502)  # API Gateway's "malformed Lambda proxy response"
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    response = Response(data, status=int(result["statusCode"]))
    for key, value in (result.get("headers") or {}).items():
        response.headers[key] = str(value)
    for key, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.add(key, str(value))
    return response
