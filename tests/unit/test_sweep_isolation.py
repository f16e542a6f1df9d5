"""The sweep reconciles every integration's lock. Its loop had no per-integration guard: one integration whose
run could not be reconciled (Step Functions refused DescribeExecution for it, a DynamoDB error) stopped the sweep
for every integration after it, and the scheduled query tags too. Each lock is now reconciled on its own; the
sweep still fails (retried, and seen) once the others are done."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from efficy_sync.fullsync import sweep as sweep_module


def test_one_integration_that_cannot_be_reconciled_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    locks = [
        SimpleNamespace(integration_id="broken", execution_arn="arn:broken", run_id="r1", held=True),
        SimpleNamespace(integration_id="fine", execution_arn="arn:fine", run_id="r2", held=True),
    ]

    def status(arn: str) -> str:
        if arn == "arn:broken":
            raise RuntimeError("AccessDeniedException: states:DescribeExecution")
        return "ABORTED"

    ended: list[str] = []

    def end_execution(fs: Any, lock: Any, status: str, error: Any) -> int:
        ended.append(lock.integration_id)
        return 3

    monkeypatch.setattr(sweep_module, "end_execution", end_execution)
    monkeypatch.setattr(sweep_module, "scheduled_query_tags", lambda fs, time_left=None: {})
    full_sync = SimpleNamespace(
        runs=SimpleNamespace(locks=lambda: locks, is_active=lambda *a: True),
        execution_status=status,
        parking=SimpleNamespace(has_parked=lambda integration_id: False),
    )
    with pytest.raises(sweep_module.SweepIncomplete, match="broken"):
        sweep_module.sweep(full_sync)  # type: ignore[arg-type]
    assert ended == ["fine"]
