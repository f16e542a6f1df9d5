"""APSIS One's profile export is read as it arrives (clients/json_stream.py), DOWNLOAD_CHUNK_BYTES at a time.
A top-level member holding a number with a fraction or an exponent (`1.25`, `2e3`) whose chunk ends right after
the `.` or the `e` was decoded as the integer before it (json's raw_decode stops there, before the end of the
buffer, so no more text was read), and the export, valid JSON that json.loads reads, was refused as "not one
JSON document": the drift check failed on every run over that export."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

from efficy_sync.clients import apsis_export
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.apsis_export import download_export
from efficy_sync.clients.http import RetryPolicy

SECTION = "com.apsis1.sections.default"
CHUNK = getattr(apsis_export, "DOWNLOAD_CHUNK_BYTES", 256 * 1024)  # the reader's chunk
HEAD = b'{"profiles": [{"keys": {"com.apsis1.keyspaces.crm-id": "1"}}], "note": "'


def export_body() -> bytes:
    """A valid export whose `took_seconds: 1.25` has its `.` as the last byte of the first chunk read."""
    tail = b'", "took_seconds": 1.'
    pad = b"x" * (CHUNK - len(HEAD) - len(tail))
    body = HEAD + pad + tail + b"25}"
    assert body[CHUNK - 1 : CHUNK] == b"."
    assert json.loads(body)["took_seconds"] == 1.25  # valid JSON
    return body


def test_a_valid_export_is_read_whatever_its_chunk_boundaries() -> None:
    body = export_body()

    class Apsis(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # the token
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(b'{"access_token": "t", "expires_in": 3600}')

        def do_GET(self) -> None:  # the finished export
            self._answer(body)

        def _answer(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Apsis)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        policy = RetryPolicy(total=0, connect_timeout=2, read_timeout=5)
        client = ApsisClient(f"http://127.0.0.1:{server.server_port}", "id", "s", section=SECTION, policy=policy)
        profiles = download_export(client, "/audience/profiles/exports/x")
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(profiles) == ["1"]
