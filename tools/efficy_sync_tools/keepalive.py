"""HTTP/1.1 keep-alive for the werkzeug servers of the local stack (moto, the simulators, the API front).

werkzeug's development server sends `Connection: close` on every response, whatever `protocol_version` says,
because after a response it drains whatever the client sent next from the socket (so a keep-alive client's
next request would be swallowed). Every call of boto3 or of a requests Session then opened a new TCP
connection and the server a new thread: 30,700 connections for a 5,000-person full sync. The real services
(AWS, Efficy, APSIS One behind their load balancers) keep connections open, and so does this handler:

- the response body is buffered, so every response (errors and empty bodies included) carries a correct
  Content-Length and an exception while producing it still becomes a clean 500;
- the request body is read through a stream limited to its Content-Length (or de-chunked), and what the
  application left unread is drained from that stream only, never past the request;
- `stop_server()` shuts the open connections down as well as the listening socket, so a stopped simulator
  refuses calls (outage tests) instead of answering on a connection a client kept in its pool.

An idle connection is closed after IDLE_TIMEOUT seconds, as load balancers do; clients (urllib3) notice a
closed pooled connection before reusing it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import traceback
from typing import Any

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import BaseWSGIServer, DechunkedInput, WSGIRequestHandler
from werkzeug.wsgi import LimitedStream

IDLE_TIMEOUT = 60.0
MAX_DRAIN = 16 * 1024 * 1024  # an unread request body bigger than this closes the connection instead
_DROPPED = (ConnectionError, socket.timeout)


class KeepAliveHandler(WSGIRequestHandler):
    """A WSGIRequestHandler that keeps HTTP/1.1 connections open between requests."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT  # socketserver applies it to the connection: an idle keep-alive read ends

    def setup(self) -> None:
        super().setup()
        # Without it, Nagle's algorithm holds a response's body until the client's delayed ACK of its headers
        # (40 ms a call); a closed connection used to flush it.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _connections(self.server).add(self.connection)

    def finish(self) -> None:
        _connections(self.server).discard(self.connection)
        with contextlib.suppress(OSError):  # the server shut the connection down while stopping
            super().finish()

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):
            return  # an idle keep-alive connection reaching IDLE_TIMEOUT: routine, not an error
        super().log_error(format, *args)

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        if not isinstance(environ["wsgi.input"], DechunkedInput):
            length = environ.get("CONTENT_LENGTH") or "0"
            environ["wsgi.input"] = LimitedStream(self.rfile, int(length) if length.isdigit() else 0)
        return environ

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info and started:
                # nothing is sent before the body is complete, so the application may replace its headers
                started.clear()
            started[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        try:
            body = self._call_app(self.server.app, environ, start_response, chunks)
        except _DROPPED as exc:
            self.close_connection = True
            self.connection_dropped(exc, environ)
            return
        except Exception:
            if self.server.passthrough_errors:
                raise
            self.log_error("Error on request:\n%s", traceback.format_exc())
            chunks = []
            body = self._call_app(InternalServerError(), environ, start_response, chunks)
        if not self._drain(environ["wsgi.input"]):
            self.close_connection = True
        self._send(environ, started[0], started[1], body)

    @staticmethod
    def _call_app(app: Any, environ: dict[str, Any], start_response: Any, chunks: list[bytes]) -> bytes:
        result = app(environ, start_response)
        try:
            for data in result:
                chunks.append(data)
        finally:
            if hasattr(result, "close"):
                result.close()
        return b"".join(chunks)

    def _drain(self, stream: Any) -> bool:
        """Read what the application left of the request body; False if it is too big to be worth it."""
        try:
            if isinstance(stream, LimitedStream):
                if stream.limit - stream._pos > MAX_DRAIN:
                    return False
                stream.exhaust()
            else:
                total = 0
                while data := stream.read(64 * 1024):
                    total += len(data)
                    if total > MAX_DRAIN:
                        return False
        except Exception:  # a client that went away or sent a broken body: this connection is done
            return False
        return True

    def _send(self, environ: dict[str, Any], status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code_str, _, msg = status.partition(" ")
        code = int(code_str)
        try:
            self.send_response(code, msg)
            for key, value in headers:
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
                elif key.lower() == "content-length" and environ["REQUEST_METHOD"] == "HEAD":
                    self.send_header(key, value)  # HEAD: the length of the body a GET would have had
            bodiless = environ["REQUEST_METHOD"] == "HEAD" or 100 <= code < 200 or code in (204, 304)
            if not bodiless:
                self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            elif self.request_version == "HTTP/1.0":
                self.send_header("Connection", "keep-alive")
            self._headers_buffer.append(b"\r\n")  # end_headers(), with the body in the same write
            if not bodiless and body:
                self._headers_buffer.append(body)
            self.flush_headers()
            self.wfile.flush()
        except _DROPPED as exc:
            self.close_connection = True
            self.connection_dropped(exc, environ)


def _connections(server: Any) -> set[socket.socket]:
    conns = server.__dict__.get("_keepalive_connections")
    if conns is None:
        conns = server.__dict__.setdefault("_keepalive_connections", _LockedSet())
    return conns


class _LockedSet(set):
    """The open connections of one server; handler threads add and remove concurrently."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            super().add(item)

    def discard(self, item: Any) -> None:
        with self._lock:
            super().discard(item)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self)


def close_connections(server: BaseWSGIServer) -> None:
    """Shut down the connections clients keep open, so their next call fails as on a stopped server."""
    for conn in _connections(server).snapshot():
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


def stop_server(server: BaseWSGIServer) -> None:
    """Stop accepting, close the listening socket and the kept-alive connections."""
    server.shutdown()
    server.server_close()
    close_connections(server)
