"""APSIS One's bulk import calls, a base of `ApsisClient` (clients/apsis.py): create, upload, poll.

What a success answer proves here (contracts/apsis-one.md section 5 lists 200/201/202/204/207):
- create_import: 201/200/202 with the import's id is created; a 207 or a body listing errors proves no import
  (an outage: retried, nothing was uploaded to it), never an import taken as created.
- get_import: a 202 or 204 without a status is "not done yet" (as the profile export's poll); a 207, or a status
  we cannot read, is unreadable (an outage): a report in part would record as imported rows it never named.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests

from efficy_sync.clients.apsis_answers import IN_PROGRESS_ANSWERS, MULTI_STATUS, check_applied
from efficy_sync.clients.apsis_transport import ApsisTransport, _redact
from efficy_sync.clients.errors import ApsisUnavailable, PayloadTooLarge, RejectedValue
from efficy_sync.clients.http import check_time
from efficy_sync.clients.meter import meter

MAX_IMPORT_FILE_BYTES = 50 * 1024 * 1024
IMPORT_DONE = ("completed", "error")


class ApsisImports(ApsisTransport):
    """The import calls of one section (`self.section`, set by ApsisClient)."""

    section: str

    @staticmethod
    def _q(segment: str) -> str:
        return quote(str(segment), safe="")

    def create_import(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Returns {import_id, file_upload_url, file_upload_body, file_upload_url_expires_at}."""
        path = f"/v2/audience/sections/{self._q(self.section)}/imports"
        response = self._call("create_import", "POST", path, body=spec)
        check_applied(response, "create_import", error=ApsisUnavailable)  # 207: no import proven (docstring)
        return self._object(response, "create_import")

    def upload_import_file(self, upload_url: str, fields: dict[str, Any], csv_bytes: bytes) -> None:
        """Multipart POST to the pre-signed URL (S3 in production): the form fields, then `file`. No bearer."""
        if len(csv_bytes) > MAX_IMPORT_FILE_BYTES:
            raise PayloadTooLarge(f"import file of {len(csv_bytes)} bytes exceeds {MAX_IMPORT_FILE_BYTES}; split it")
        left = check_time("APSIS upload_import")
        self._count("upload_import")
        try:
            response = self._session.post(
                upload_url,
                data=fields,
                files={"file": ("import.csv", csv_bytes, "text/csv")},
                timeout=self.policy.timeout_within(left),
            )
        except requests.RequestException as exc:
            meter.record_unanswered("apsis", self.policy.total + 1)
            raise ApsisUnavailable(f"APSIS upload_import: {type(exc).__name__}") from exc
        meter.record("apsis", response)
        if response.status_code == 403:  # the URL's signature (expired, say), not our credentials: a new import
            raise ApsisUnavailable("APSIS upload_import: 403 from the pre-signed URL", status=403)
        if response.status_code >= 300:
            raise self._error_for(response, "upload_import")

    def get_import(self, import_id: str) -> dict[str, Any]:
        """Returns the import's `result`: {"status": ..., "report": {...}} (report once processed). The same
        fields at the top level (no `result` around them) are read as the result. An answer without a status is
        unreadable at once: polled as "no status yet", it held the import's page until the poll's timeout."""
        path = f"/audience/sections/{self._q(self.section)}/imports/{self._q(import_id)}"
        response = self._call("get_import", "GET", path)
        if response.status_code == MULTI_STATUS:  # a report in part: rows it leaves out read as imported
            raise ApsisUnavailable("APSIS get_import: 207 Multi-Status, the report in part", status=MULTI_STATUS)
        if response.status_code in IN_PROGRESS_ANSWERS and not response.content.strip():
            return {"status": "in_progress"}  # accepted, nothing to say yet: polled again
        answer = self._object(response, "get_import")
        result = answer.get("result", answer if "status" in answer else None)
        if result is None and response.status_code in IN_PROGRESS_ANSWERS:
            return {"status": "in_progress"}
        if not isinstance(result, dict):  # an import's status we cannot read is not "no status yet"
            raise ApsisUnavailable(f"APSIS get_import: the answer's result is {type(result).__name__}, not an object")
        status = result.get("status")
        if not isinstance(status, str) or not status.strip():
            raise ApsisUnavailable(f"APSIS get_import: the answer carries no status ({sorted(result)[:5]})")
        return result

    def run_import(
        self, spec: dict[str, Any], csv_bytes: bytes, *, poll_interval: float = 1.0, timeout: float = 600
    ) -> dict[str, Any]:
        """Create, upload, then poll until done. Returns the report plus `import_id` and `status`.

        Raises RejectedValue when APSIS rejects the file as a whole, ApsisUnavailable when it is not done
        within `timeout` seconds (re-running is safe: an import upserts).
        """
        created = self.create_import(spec)
        import_id = created["import_id"]
        self.upload_import_file(created["file_upload_url"], created.get("file_upload_body") or {}, csv_bytes)
        result = self._wait_for_import(import_id, poll_interval, timeout)
        report = {"import_id": import_id, "status": result.get("status"), **(result.get("report") or {})}
        if str(result.get("status")).lower() == "error":
            detail = "; ".join(str(e.get("message")) for e in report.get("errors", []))
            raise RejectedValue(f"APSIS import {import_id} failed: {_redact(detail)}", detail=_redact(detail))
        return report

    def _wait_for_import(self, import_id: str, poll_interval: float, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.get_import(import_id)
            if str(result.get("status")).lower() in IMPORT_DONE:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApsisUnavailable(f"APSIS import {import_id} still {result.get('status')} after {timeout}s")
            time.sleep(min(poll_interval, remaining))
