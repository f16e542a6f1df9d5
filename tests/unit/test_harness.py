"""The test run's own set-up, where a silent change would cost every `make test` time (or hide tests).

make test runs `--dist loadgroup` so that the modules on one shared stack (xdist groups "loud_stack" and
"user_stack", tests/conftest.py) run on one worker and start that stack once. pytest 9.2 drops the grouping
without a word (pytest-xdist issue 1386): each worker then starts its own stacks, about 15 s more per run.
"""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("harness_probe")
def test_loadgroup_keeps_a_group_on_one_worker(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):  # set on an xdist worker under --dist loadgroup
        pytest.skip("only meaningful under make test's --dist loadgroup")
    # xdist marks a grouped test by its node id; without the suffix the scheduler spreads the group's tests
    assert request.node.nodeid.endswith("@harness_probe"), (
        f"{request.node.nodeid}: xdist_group is ignored by this pytest (pin pytest below 9.2 in requirements-dev.lock)"
    )


@pytest.mark.xdist_group("metrics_probe")
def test_a_metric_added_outside_a_handler_is_left_in_the_shared_set() -> None:
    """The first of a pair, in file order on one worker: code under test that counts outside a handler."""
    from aws_lambda_powertools.metrics import MetricUnit
    from efficy_sync.observability import count, metrics, serving

    metrics.add_metric(name="PersonsSynced", unit=MetricUnit.Count, value=1)
    assert metrics.provider.metric_set["PersonsSynced"]["Value"] == [1.0]
    serving("leftover")  # an integration served outside a handler, and one counted for
    count("PersonsSynced", integration_id="counted")


@pytest.mark.xdist_group("metrics_probe")
def test_the_next_test_starts_with_no_metric_of_the_last() -> None:
    """conftest's _no_leftover_metrics: without it the next handler of the worker printed the value above in
    another test's EMF document (CI failed so on test_export_duplicates)."""
    from efficy_sync.observability import integration_counts, metrics

    assert "PersonsSynced" not in metrics.provider.metric_set
    # the next flush would print one more document per integration left over, with this test's API calls
    assert integration_counts.take({"ApsisCalls": 2}) == {}
