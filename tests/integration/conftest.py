"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync import aws
from efficy_sync_tools.local import moto_speed, moto_threads
from efficy_sync_tools.local.aws import MotoServer
from efficy_sync_tools.sims.efficy import EfficySimulator
from moto import mock_aws

REGION = "eu-west-1"


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


@pytest.fixture
def in_process_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto inside this process (mock_aws) with a Lambda's environment and fresh shared clients, for the
    stores' DynamoDB and SQS paths where a server process is not the point; yields the region."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # the local stack's moto patches (no behaviour changed): unpatched, moto deep-copies a table for every
    # TransactWriteItems, which fails while another thread writes to it (a page's batches run in parallel);
    # and its DynamoDB backend is plain dicts, so two threads updating one item could fail the same way
    # (`dictionary changed size during iteration`, CI at stop 42): requests are serialised as on the server
    moto_speed.apply()
    moto_threads.apply()
    with mock_aws():
        aws.reset_clients()
        try:
            yield REGION
        finally:
            aws.reset_clients()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[EfficySimulator]:
    """The Efficy simulator, one server per module (stopping one takes half a second). A module testing the APSIS
    simulator defines its own `shared_sim` and `sim`, which win over these."""
    simulator = EfficySimulator().start()
    yield simulator
    simulator.stop()


@pytest.fixture
def sim(shared_sim: EfficySimulator) -> EfficySimulator:
    """The module's Efficy simulator, reset for each test."""
    shared_sim.reset()
    return shared_sim
