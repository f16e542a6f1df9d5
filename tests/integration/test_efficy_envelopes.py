"""Envelope-level answers of the real Efficy that the simulator does not give (contracts/efficy.md §8): a
context's error in another spelling than `#error`, a records page that reports an error beside an empty list, a
malformed master row, a body in the charset the server declares. The client reads them over real HTTP (the
simulator's fault rules serve the crafted answer). None of them may read as "this person is gone", nor fail a
whole batch of the real-time worker for one person's answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyBusinessError, EfficyUnavailable
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_efficy_real_shapes import FAST, KEY, MASTER, client, dataset  # noqa: F401 (fixture)
from tests.integration.test_worker_person_errors import Recorder, change, efficy, worker  # noqa: F401 (fixture)

NO_ACCESS = {"errorcode": "NO_ACCESS", "errorstring": "You have no rights on this record"}


def serve_once(sim: EfficySimulator, path: str, body: Any) -> None:
    spec = {"path_regex": path, "status": 200, "count": 1, "body": json.dumps(body), "content_type": "application/json"}
    assert requests.post(f"{sim.url}/_sim/faults", json=spec, timeout=5).status_code == 200


def found(key: int) -> dict[str, Any]:
    master = {**MASTER, "K_CONTACT": key, "EMAIL1": f"p{key}@example.com"}
    return {
        "#id": f"consult-{key}",
        "@name": "consult",
        "key": key,
        "@func": [{"@name": "master", "#result": dataset([master])}, {"@name": "detail", "#result": dataset([])}],
    }


def refused(key: int, **error: Any) -> dict[str, Any]:
    """A context that reports an error and still carries its (empty) datasets."""
    empty = [{"@name": "master", "#result": dataset([])}, {"@name": "detail", "#result": dataset([])}]
    return {"#id": f"consult-{key}", "@name": "consult", "key": key, **error, "@func": empty}


# ---- a context's error in another spelling ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        {"@error": NO_ACCESS},
        {"error": {"code": "NO_ACCESS", "message": "You have no rights on this record"}},
        {"error": "You have no rights on this record"},
        {"errors": [{"code": "NO_ACCESS", "title": "You have no rights on this record"}]},
        {"@error": True, "#message": "You have no rights on this record"},
        # the flag as text, as Efficy sends its booleans ("1"/"0", contract §3)
        {"success": "false", "message": "You have no rights on this record"},
        {"ok": "0", "message": "You have no rights on this record"},
    ],
)
def test_a_context_error_in_another_spelling_is_an_error_not_an_absence(
    sim: EfficySimulator, client: EfficyClient, error: dict[str, Any]
) -> None:
    """Person 8 exists but our API user may not see them: the consult reports it beside empty datasets, and the
    records export (run as the same user) does not list them. Unread, the error left an empty master, read as
    "no such record", which the export confirmed: person 8 was deleted from APSIS One."""
    sim.upsert_persons([{**MASTER, "K_CONTACT": k, "EMAIL1": f"p{k}@example.com"} for k in (7, 9)])
    serve_once(sim, "^/crm/json", [found(7), refused(8, **error), found(9)])
    with pytest.raises(EfficyBusinessError) as raised:
        client.get_persons([7, 8, 9])
    assert "no rights" in str(raised.value)


def test_an_error_in_another_spelling_fails_only_that_persons_message(efficy: EfficySimulator) -> None:
    """The real-time worker's batch: persons 1 and 3 are applied, person 2's message alone is retried."""
    serve_once(efficy, "^/crm/json", [found(1), refused(2, **{"@error": NO_ACCESS}), found(3)])
    recorder = Recorder()
    batch = worker(efficy, recorder).prefetch([change(1), change(2), change(3)])
    assert batch.apply(change(1)).result == "synced"
    serve_once(efficy, "^/crm/json", [refused(2, **{"@error": NO_ACCESS})])  # person 2 read alone
    with pytest.raises(EfficyBusinessError, match="no rights"):
        batch.apply(change(2))
    assert batch.apply(change(3)).result == "synced"
    assert recorder.synced == [1, 3]


@pytest.mark.parametrize("empty", [{"error": {}}, {"error": ""}, {"error": None}, {"errors": []}, {"@error": ""}])
def test_an_empty_error_in_another_spelling_is_no_error(
    sim: EfficySimulator, client: EfficyClient, empty: dict[str, Any]
) -> None:
    serve_once(sim, "^/crm/json", [{**found(7), **empty}])
    assert client.get_persons([7])[7]["EMAIL1"] == "p7@example.com"


# ---- a records page that reports an error beside its list -----------------------------------------------------
@pytest.mark.parametrize(
    "page",
    [
        {"records": [], "errors": [{"id": "1", "title": "Forbidden", "detail": "no rights on contacts"}]},
        {"records": [], "status": "error", "message": "database unavailable"},
        {"records": [], "success": False},
        {"records": [], "ok": False},
        {"records": [], "status": 503},
        # numbers and booleans as text (Efficy sends its values so, contract §3)
        {"records": [], "status": "503"},
        {"records": [], "success": "false"},
        {"records": [], "ok": "0"},
        {"records": [], "#error": {"errorcode": "X", "errorstring": "maintenance"}},
    ],
)
def test_a_records_page_that_reports_an_error_confirms_no_absence(
    sim: EfficySimulator, client: EfficyClient, page: dict[str, Any]
) -> None:
    """Person 8 read as not found by JSON-RPC; the confirming read's answer reports an error beside an empty
    list (Efficy U's REST errors are `{data, errors: [...]}`, contract §8). Read as a page, 8 was deleted."""
    sim.upsert_persons([{**MASTER, "K_CONTACT": 7}])
    serve_once(sim, "^/v1/records/contacts", page)
    with pytest.raises(EfficyBusinessError) as raised:
        client.get_persons([7, 8])
    assert raised.value.code == "INVALID_RESPONSE"


@pytest.mark.parametrize("page", [{"records": [], "errors": []}, {"records": [], "status": "ok", "success": True}])
def test_a_records_page_without_an_error_still_confirms(
    sim: EfficySimulator, client: EfficyClient, page: dict[str, Any]
) -> None:
    serve_once(sim, "^/v1/records/contacts", page)
    assert client.get_persons([8]) == {}


# ---- a malformed answer for one person is that person's error ---------------------------------------------------
def consult_of(key: int, funcs: list[Any]) -> dict[str, Any]:
    return {"#id": f"consult-{key}", "@name": "consult", "key": key, "@func": funcs}


MALFORMED = [
    [{"@name": "master", "#result": dataset([None])}],
    [{"@name": "master", "#result": dataset([[]])}],
    [{"@name": "master", "#result": dataset(["K_CONTACT"])}],
    ["master", {"@name": "master", "#result": dataset([])}],
]


@pytest.mark.parametrize("funcs", MALFORMED)
def test_a_malformed_master_is_an_invalid_answer(sim: EfficySimulator, client: EfficyClient, funcs: Any) -> None:
    serve_once(sim, "^/crm/json", [consult_of(7, funcs)])
    with pytest.raises(EfficyBusinessError) as raised:
        client.get_persons([7])
    assert raised.value.code == "INVALID_RESPONSE"


@pytest.mark.parametrize("funcs", MALFORMED)
def test_a_malformed_master_fails_only_that_persons_message(efficy: EfficySimulator, funcs: Any) -> None:
    """It raised AttributeError, which the worker reads as a failure of the whole integration: persons 1 and 3
    failed with person 2 on every delivery they shared with them, and could reach the DLQ with them."""
    serve_once(efficy, "^/crm/json", [found(1), consult_of(2, funcs), found(3)])
    recorder = Recorder()
    batch = worker(efficy, recorder).prefetch([change(1), change(2), change(3)])
    assert batch.apply(change(1)).result == "synced"
    serve_once(efficy, "^/crm/json", [consult_of(2, funcs)])
    with pytest.raises(EfficyBusinessError):
        batch.apply(change(2))
    assert batch.apply(change(3)).result == "synced"
    assert recorder.synced == [1, 3]


@pytest.mark.parametrize("record", [None, "7", [7]])
def test_a_records_page_entry_that_is_no_record_is_an_invalid_answer(
    sim: EfficySimulator, client: EfficyClient, record: Any
) -> None:
    serve_once(sim, "^/v1/records/contacts", {"records": [record]})
    with pytest.raises(EfficyBusinessError) as raised:
        client.list_persons_page(0, 10)
    assert raised.value.code == "INVALID_RESPONSE"


# ---- a body in the charset the server declares ------------------------------------------------------------------
@pytest.fixture
def raw_server() -> Iterator[tuple[str, list[tuple[bytes, str]]]]:
    """A server that answers each call with the next (body bytes, Content-Type) of its list."""
    answers: list[tuple[bytes, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body, content_type = answers.pop(0)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


NAMED = {**MASTER, "NAME": "Müller", "FIRSTNAME": "Zoë \u2013 Anaïs"}


@pytest.mark.parametrize("charset", ["iso-8859-1", "windows-1252", "cp1252", "utf-16"])
def test_a_body_in_a_declared_charset_is_read_in_it(raw_server: Any, charset: str) -> None:
    """Latin-1 is not UTF-8: the answer was 'not JSON', an outage retried for ever for each person with an
    accented name, and every full-sync page that held one failed."""
    url, answers = raw_server
    first = dataset([{**NAMED, "FIRSTNAME": "Zoë Anaïs"}]) if charset == "iso-8859-1" else dataset([NAMED])
    body = [consult_of(7, [{"@name": "master", "#result": first}, {"@name": "detail", "#result": dataset([])}])]
    answers.append((json.dumps(body, ensure_ascii=False).encode(charset), f"application/json; charset={charset}"))
    with EfficyClient(url, KEY, policy=FAST) as efficy:
        person = efficy.get_persons([7])[7]
    assert person["NAME"] == "Müller" and person["FIRSTNAME"] == first["#data"][0]["FIRSTNAME"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/json; charset=x-unknown"]
)
def test_a_body_that_is_not_utf8_nor_in_a_known_declared_charset_is_an_outage(
    raw_server: Any, content_type: str
) -> None:
    url, answers = raw_server
    body = [consult_of(7, [{"@name": "master", "#result": dataset([NAMED])}])]
    answers.append((json.dumps(body, ensure_ascii=False).encode("cp1252"), content_type))
    with EfficyClient(url, KEY, policy=FAST) as efficy, pytest.raises(EfficyUnavailable, match="not JSON"):
        efficy.get_persons([7])


def test_a_utf8_body_is_read_as_utf8_whatever_its_header_declares(raw_server: Any) -> None:
    url, answers = raw_server
    body = [consult_of(7, [{"@name": "master", "#result": dataset([NAMED])}, {"@name": "detail", "#result": []}])]
    answers.append((json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=iso-8859-1"))
    with EfficyClient(url, KEY, policy=FAST) as efficy:
        assert efficy.get_persons([7])[7]["FIRSTNAME"] == "Zoë \u2013 Anaïs"
