"""The local stack runs every function's invocations in one process: each must log its own keys (log_keys.py).

Found following the README by hand: in `local up`'s log a page's "page done" line named the cleanup function,
because powertools' append_keys is process-wide and the invocations overlap."""

from __future__ import annotations

import io
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from efficy_sync.settings import function_scope
from efficy_sync_tools.local import log_keys
from efficy_sync_tools.local.lambdas import carry_scope_into_pools


@pytest.fixture
def logger(monkeypatch: pytest.MonkeyPatch) -> tuple[Logger, io.StringIO]:
    # the patches are the local stack's: undone after the test, so other tests keep powertools as shipped
    monkeypatch.setattr(Logger, "append_keys", Logger.append_keys)
    monkeypatch.setattr(Logger, "remove_keys", Logger.remove_keys)
    monkeypatch.setattr(ThreadPoolExecutor, "submit", ThreadPoolExecutor.submit)
    log_keys.isolate()
    carry_scope_into_pools()
    out = io.StringIO()
    # a service of its own: powertools sets a service's logger up once per process
    return Logger(service=f"log-keys-{uuid.uuid4().hex}", logger_handler=_handler(out)), out


def _handler(out: io.StringIO) -> Any:
    import logging

    return logging.StreamHandler(out)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_overlapping_invocations_log_their_own_keys(logger: tuple[Logger, io.StringIO]) -> None:
    log, out = logger
    both_appended = threading.Barrier(2)

    def invocation(function: str, page: int | None) -> None:
        with log_keys.fresh():
            log.append_keys(function_name=function, **({"page": page} if page is not None else {}))
            both_appended.wait(timeout=5)  # the other invocation has appended its keys too
            log.info(f"{function} done")

    threads = [
        threading.Thread(target=invocation, args=("SyncPageFunction", 3)),
        threading.Thread(target=invocation, args=("CleanupFunction", None)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    by_message = {line["message"]: line for line in lines(out)}
    assert by_message["SyncPageFunction done"]["function_name"] == "SyncPageFunction"
    assert by_message["SyncPageFunction done"]["page"] == 3
    assert by_message["CleanupFunction done"]["function_name"] == "CleanupFunction"
    assert "page" not in by_message["CleanupFunction done"]


def test_an_invocation_starts_without_the_previous_ones_keys(logger: tuple[Logger, io.StringIO]) -> None:
    log, out = logger
    with log_keys.fresh():
        log.append_keys(function_name="FullSyncStepFunction", step="finish")
    with log_keys.fresh():
        log.append_keys(function_name="ApplyChangesFunction")
        log.info("change applied")
        log.remove_keys(["function_name"])
        log.info("no function")
    first, second = lines(out)
    assert first["function_name"] == "ApplyChangesFunction" and "step" not in first
    assert "function_name" not in second


def test_pool_threads_get_the_functions_keys_but_not_a_thread_local_correlation_id(
    logger: tuple[Logger, io.StringIO],
) -> None:
    log, out = logger
    token = function_scope.set(("SyncPageFunction", frozenset()))
    try:
        with log_keys.fresh():
            log.append_keys(function_name="SyncPageFunction", run_id="r1")
            log.thread_safe_append_keys(correlation_id="c-1")  # per change: code passes it to its threads itself
            with ThreadPoolExecutor(1) as pool:
                pool.submit(log.info, "from a person thread").result(timeout=5)
    finally:
        function_scope.reset(token)
    [line] = lines(out)
    assert line["function_name"] == "SyncPageFunction" and line["run_id"] == "r1"
    assert "correlation_id" not in line
