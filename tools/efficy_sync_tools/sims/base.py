"""What both simulators share: a threaded werkzeug server on loopback, call counting and fault injection.

A simulator subclass declares its routes with `route()` and gets, for free, the control endpoints
`POST /_sim/faults`, `DELETE /_sim/faults`, `GET /_sim/calls` and `POST /_sim/reset`.
Calls are counted per route template ("PATCH /v2/.../{key}/...") so tests and benchmarks can report
API calls per person without caring about the concrete keys.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from ..keepalive import KeepAliveHandler, stop_server

Handler = Callable[..., Response]


class _QuietHandler(KeepAliveHandler):
    """Simulators serve thousands of requests in a test; one log line each would drown the output.

    Keep-alive (HTTP/1.1), like the real APIs behind their load balancers."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def json_response(payload: Any, status: int = 200, content_type: str = "application/json") -> Response:
    return Response(json.dumps(payload), status=status, content_type=content_type)


@dataclass
class FaultRule:
    """One injected fault: an error status (with an optional body) or a delay, for `count` calls or a `rate`.

    `apply`: the request is served as usual (a write applied) and its answer replaced by `status` and `body`, as
    APSIS One answers 202 (accepted) or 207 (Multi-Status: applied in part) to a write it did apply, or part of.
    Without it a status is answered instead of serving the request (nothing applied)."""

    path_regex: str
    status: int | None = None
    delay_ms: int = 0
    count: int | None = None
    rate: float | None = None
    body: str | None = None
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    apply: bool = False

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path_regex)

    def matches(self, method: str, path: str, rng: random.Random) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if not self._pattern.search(path):
            return False
        if self.count is not None and self.count <= 0:
            return False
        return not (self.rate is not None and rng.random() >= self.rate)


class SimServer:
    """Base class of the simulators. Subclasses call `self.route(...)` in `__init__` and implement `reset()`."""

    name = "sim"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int = 7) -> None:
        self._host = host
        self._port = port
        self._rules: list[Rule] = []
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.RLock()
        self._faults: list[FaultRule] = []
        self._calls: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url_map: Map | None = None
        self.route("/_sim/faults", self._add_fault, methods=["POST"], control=True)
        self.route("/_sim/faults", self._clear_faults, methods=["DELETE"], control=True)
        self.route("/_sim/calls", self._get_calls, methods=["GET"], control=True)
        self.route("/_sim/calls", self._clear_calls, methods=["DELETE"], control=True)
        self.route("/_sim/reset", self._reset_route, methods=["POST"], control=True)

    # ---- routing ------------------------------------------------------------------------------------
    def route(self, rule: str, handler: Handler, *, methods: list[str], control: bool = False) -> None:
        """Register `handler(request, **url_params) -> Response` for `rule` (werkzeug syntax)."""
        endpoint = f"{'ctl' if control else 'api'}|{methods[0]}|{rule}"
        self._rules.append(Rule(rule, endpoint=endpoint, methods=methods, strict_slashes=False))
        self._handlers[endpoint] = handler
        self._url_map = None

    def _map(self) -> Map:
        if self._url_map is None:
            self._url_map = Map([Rule(r.rule, endpoint=r.endpoint, methods=r.methods) for r in self._rules])
        return self._url_map

    # ---- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} simulator is not started")
        return f"http://{self._host}:{self._server.server_port}"

    def start(self) -> SimServer:
        self._server = make_server(self._host, self._port, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            stop_server(self._server)
            self._server = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state --------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Subclasses clear their data here (and call super().reset())."""
        with self._lock:
            self._faults.clear()
            self._calls.clear()

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def count_call(self, key: str) -> None:
        with self._lock:
            self._calls[key] += 1

    def add_fault(self, **spec: Any) -> None:
        with self._lock:
            self._faults.append(FaultRule(**spec))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ---- WSGI ---------------------------------------------------------------------------------------
    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        # populate_request=False: no environ -> request back-reference, so the request dies with its last
        # reference instead of as cyclic garbage (thousands per full sync, each a push towards a GC pass)
        request = Request(environ, populate_request=False)
        request.max_content_length = 64 * 1024 * 1024
        try:
            response = self._dispatch(request)
        except HTTPException as exc:
            response = self.error_response(exc.code or 500, exc.name, exc.description or "")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        adapter = self._map().bind_to_environ(request.environ)
        try:
            endpoint, params = adapter.match()
        except NotFound:
            return self.error_response(404, "Not Found", f"no route for {request.method} {request.path}")
        kind, _method, rule = endpoint.split("|", 2)
        if kind == "api":
            template = _PARAM.sub(lambda m: "{" + m.group(1) + "}", rule)
            self.count_call(f"{request.method} {template}")
            fault = self._take_fault(request.method, request.path)
            if fault is not None:
                if fault.delay_ms:
                    time.sleep(fault.delay_ms / 1000)
                if fault.status is not None:
                    if fault.apply:
                        self._handlers[endpoint](request, **params)
                    body = fault.body if fault.body is not None else ""
                    return Response(body, status=fault.status, content_type=fault.content_type, headers=fault.headers)
        return self._handlers[endpoint](request, **params)

    def _take_fault(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, self._rng):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def error_response(self, status: int, title: str, detail: str) -> Response:
        """Subclasses shape errors the way their API does."""
        return json_response({"title": title, "status": status, "detail": detail}, status)

    # ---- control routes -----------------------------------------------------------------------------
    def _add_fault(self, request: Request) -> Response:
        spec = request.get_json(force=True, silent=True) or {}
        if "path_regex" not in spec:
            return json_response({"error": "path_regex is required"}, 400)
        allowed = set(FaultRule.__dataclass_fields__)
        unknown = set(spec) - allowed
        if unknown:
            return json_response({"error": f"unknown fields {sorted(unknown)}; allowed {sorted(allowed)}"}, 400)
        self.add_fault(**spec)
        return json_response({"faults": len(self._faults)})

    def _clear_faults(self, request: Request) -> Response:
        self.clear_faults()
        return json_response({"faults": 0})

    def _get_calls(self, request: Request) -> Response:
        return json_response(self.calls())

    def _clear_calls(self, request: Request) -> Response:
        with self._lock:
            self._calls.clear()
        return json_response({})

    def _reset_route(self, request: Request) -> Response:
        self.reset()
        return json_response({"reset": True})
