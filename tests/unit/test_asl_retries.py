"""Step Functions matches a Lambda error by its exact class name, not by inheritance: a Retry that names
`TransientError` does not retry `OutOfTime` or `EfficyInconclusive`, which then reach the Catch and fail the
whole run. So every state that retries the transient family names each of its classes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from efficy_sync.clients import errors

ASL = Path(__file__).resolve().parents[2] / "statemachines" / "full_sync.asl.json"


def _transient_names() -> set[str]:
    """The transient family of the API clients (errors.py); subclasses elsewhere are re-raised by the handlers
    as TransientError (errors.retry_as, checked below)."""
    names: set[str] = set()
    todo = [errors.TransientError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == errors.__name__:
            names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _states(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in node.get("States", {}).items():
        yield f"{path}{name}", state
        for sub in (state.get("ItemProcessor"), state.get("Iterator")):
            if sub:
                yield from _states(sub, f"{path}{name}/")
        for branch in state.get("Branches", []):
            yield from _states(branch, f"{path}{name}/")


def test_every_transient_retry_names_the_whole_transient_family() -> None:
    family = _transient_names()
    assert {"OutOfTime", "EfficyInconclusive", "RateLimited"} <= family  # the hierarchy this test relies on
    assert family == errors.STATE_MACHINE_RETRIES  # what the handlers let through by name
    retrying = 0
    for name, state in _states(json.loads(ASL.read_text())):
        for retry in state.get("Retry", []):
            if "TransientError" in retry["ErrorEquals"]:
                retrying += 1
                missing = family - set(retry["ErrorEquals"])
                assert not missing, f"{name}: Retry misses {sorted(missing)}"
    assert retrying >= 5


def test_a_transient_class_the_retry_does_not_name_is_raised_as_transient_error() -> None:
    class ElsewhereTransient(errors.TransientError):
        pass

    raised = errors.retry_as(ElsewhereTransient("x"))
    assert type(raised) is errors.TransientError and "ElsewhereTransient" in str(raised)
    kept = errors.OutOfTime("y")
    assert errors.retry_as(kept) is kept
