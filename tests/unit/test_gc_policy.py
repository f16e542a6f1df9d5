"""efficy_sync.gc_policy: the thresholds the handlers' import sets (tests/unit/test_coldstart.py checks each
handler; tests/artifact checks the built artifact)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from efficy_sync import gc_policy


@pytest.fixture
def thresholds() -> Iterator[None]:
    """The test process's own thresholds back afterwards."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


@pytest.mark.usefixtures("thresholds")
def test_apply_raises_the_default_thresholds_to_the_policy() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's default
    gc_policy.apply()
    assert gc.get_threshold() == gc_policy.THRESHOLDS
    gc_policy.apply()  # twice (the local stack imports every handler into one process): the same
    assert gc.get_threshold() == gc_policy.THRESHOLDS


@pytest.mark.usefixtures("thresholds")
def test_apply_leaves_a_process_that_collects_less_often_as_it_is() -> None:
    gc.set_threshold(50_000, 20, 20)
    gc_policy.apply()
    assert gc.get_threshold() == (50_000, 20, 20)


def test_the_policy_collects_less_often_than_the_default_and_disables_nothing() -> None:
    young, middle, full = gc_policy.THRESHOLDS
    assert young > 700 and middle >= 1 and full >= 1  # 0 would switch a generation off
    assert gc.isenabled()
