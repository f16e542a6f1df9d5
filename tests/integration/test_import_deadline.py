"""A file's imports share one wait, within the Lambda's time. The Imports step gives each file
`_timeout(time_left)` (the Lambda's time less 30 s), but each import of the file (attributes and opt-ins, then
opt-outs, then a second channel) got that whole timeout anew: a file of two kinds waited past the Lambda's
timeout, which killed the step inside the second import before it marked the rows the first one had sent (an
import APSIS applied). Retried and killed again, the run failed; APSIS held opt-ins no state knew of, and a person
who then left the CRM profile was never opted out.

Fake clock for the writer's waits (import_writer.time) and the Lambda's time_left; the Lambda "dies" 5 s
before its 900 s (the step has no call deadline of its own). Real Collector, ImportWriter, PersonSyncer,
simulators over HTTP (fixtures of test_import_layout)."""

from __future__ import annotations

import time as real_time
import types
from typing import Any

import pytest
from efficy_sync.fullsync import import_writer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    NEWS,
    collector,
    consents_of,
    person,
    queue_pages,
    world,
)
from tests.integration.test_import_unconfirmed import _full_sync
from tests.memory_store import MemoryPersonStateStore

LAMBDA_SECONDS = 900.0  # template.yaml: FullSyncStepFunction Timeout
IMPORT_TAKES = 500.0  # APSIS's processing time is undocumented; README: the step waits up to 600 s an import


class LambdaKilled(BaseException):
    """Lambda's timeout: the process stops; no `except Exception` runs."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > LAMBDA_SECONDS - 1:
            raise LambdaKilled(f"killed at {self.now:.0f}s")


def test_a_file_of_two_imports_never_outlives_the_lambda_with_its_first_import_unmarked(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    # persons 31..60 were loaded by an earlier run and are opted in
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(31, 61)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})
    # now 1..30 are new CRM members (opt-in, file's first import) and 31..60 left the profile (opt-out import)
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)] + [person(k, []) for k in range(31, 61)])
    queued = queue_pages(world, states, pages=1, size=60)

    clock = Clock()
    monkeypatch.setattr(import_writer, "time", types.SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    real_get_import = world["apsis"].get_import
    first_poll: dict[str, float] = {}

    def slow_get_import(import_id: str) -> dict[str, Any]:  # APSIS takes IMPORT_TAKES s for each import
        started = first_poll.setdefault(import_id, clock.now)
        if clock.now - started < IMPORT_TAKES:
            return {"status": "in_progress"}
        for _ in range(200):  # the simulator applies the file on a timer thread (real time): wait for it
            result = real_get_import(import_id)
            if result["status"] in ("completed", "error"):
                return result
            real_time.sleep(0.02)
        return result

    monkeypatch.setattr(world["apsis"], "get_import", slow_get_import)
    step = collector(world, states, rows=100, counted=[])

    killed = False
    try:
        step.run(queued, {}, time_left=lambda: LAMBDA_SECONDS - clock.now)
    except LambdaKilled:
        killed = True
    except Exception as exc:  # an error in time: the step is retried by the state machine (the rows marked)
        assert "still" in str(exc), exc  # the import's wait ran out, nothing else
    monkeypatch.undo()
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")

    assert consents_of(world, 7) == {(NEWS, "email", "opt-in")}  # the first import was applied by APSIS
    unknown_to_state = [k for k in range(1, 31) if states.get(CFG.integration_id, k) is None]
    # the retry is killed the same way and the run fails (Catch -> FailRun). Later person 7 leaves the profile:
    world["efficy_sim"].patch_person(7, {}, profiles=[])
    _full_sync(world, states)  # the next run (or real time): what does it know of person 7's opt-in?
    assert consents_of(world, 7) == {(NEWS, "email", "opt-out")}, (
        f"killed={killed} at {clock.now:.0f}s of a {LAMBDA_SECONDS:.0f}s Lambda; {len(unknown_to_state)} persons "
        "APSIS opted in by the file's first import had no state; person 7 left the CRM profile and stays opted in"
    )
