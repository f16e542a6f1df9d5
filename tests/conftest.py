"""Shared fixtures. `stack` starts one embedded local stack per test worker (process), lazily.

Hypothesis profiles (see tests/properties.py): `ci` is the default; `--hypothesis-profile=thorough` runs each
property test a hundred times as long.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import settings

from tests.support import Stack, iam_refusals, share_botocore_data, start_stack, unique_key
from tests.user_stack import UserStack, start_user_stack

settings.register_profile("ci", max_examples=10, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile("ci")  # hypothesis's pytest plugin loads --hypothesis-profile after this module
share_botocore_data()  # before any test makes a client (support.py says why)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def loud_stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A second stack with the handlers' logs on (DEBUG, every incoming event logged, EMF metrics printed) in
    `Stack.log_path`, for the tests that search the logs. Session-scoped, and its modules share the xdist group
    "loud_stack", so that `--dist loadgroup` (make test) runs them on one worker and one stack serves them all.
    pytest is pinned below 9.2, which silently drops that grouping (pytest-xdist issue 1386, open):
    tests/unit/test_harness.py fails if the grouping is lost again."""
    running = start_stack(
        tmp_path_factory.mktemp("loud-stack"),
        env={
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
            "POWERTOOLS_LOGGER_LOG_EVENT": "true",
            "POWERTOOLS_METRICS_DISABLED": "false",
        },
        quiet=False,
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def user(tmp_path_factory: pytest.TempPathFactory) -> UserStack:
    """The stack a user starts as the README says, used only through the README's environment (tests/user_stack.py).
    Session-scoped, and its modules share the xdist group "user_stack": one stack for all of them (it was one per
    module and worker)."""
    running = start_user_stack(tmp_path_factory.mktemp("home"))
    yield running
    running.stop()


@pytest.fixture
def key() -> int:
    """A person key of this test's own (one stack is shared by the tests of a worker)."""
    return unique_key()


@pytest.fixture(autouse=True)
def _no_leftover_metrics() -> None:
    """powertools keeps metric sets at class level, shared by the process: values a test's code added outside a
    handler (no flush) were printed by the next handler of that worker, in another test (CI failed on
    test_export_duplicates reading PersonsSynced [1, 1, 1, 4]). Every test starts with an empty set; a module
    never imported is not imported here (the import-time tests measure a cold process)."""
    observability = sys.modules.get("efficy_sync.observability")
    if observability is not None:
        observability.metrics.clear_metrics()
        observability.meter.take()  # API calls counted outside a handler are added at the next flush the same way
        # and the integrations served: a leftover one got a second EMF document, with this test's API calls
        # (test_observability read two documents where its handler prints one)
        observability.integration_counts.take({})


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> None:
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").clear_faults()


@pytest.fixture(autouse=True)
def _no_call_iam_would_refuse(request: pytest.FixtureRequest) -> None:
    """The local stack refuses a function's AWS call its role does not allow, as AWS does (local/iam.py), and
    logs it. Code that turns an error into a warning would hide that, so a test fails on any refusal logged in
    its stack's log while it ran (the shared stacks' and the README-started one's)."""
    names = ("stack", "loud_stack", "user")
    logs = [request.getfixturevalue(name).log_path for name in names if name in request.fixturenames]
    offsets = {path: path.stat().st_size for path in logs}
    yield
    for path, offset in offsets.items():
        denied = iam_refusals(path, offset)
        assert not denied, "IAM would refuse on AWS what the local stack ran:\n" + "\n".join(denied[:5])
