"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync_tools.local.aws import MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """The local stack's moto server (its own process, with our patches), one per test module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MOTO_PORT", "0")  # MotoServer sets it; the old value comes back afterwards
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
        mp.undo()
