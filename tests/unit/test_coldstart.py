"""Every handler imports in a fresh interpreter with only the template's environment, without calling AWS."""

from __future__ import annotations

import pytest
from efficy_sync.gc_policy import THRESHOLDS

from bench.coldstart import FUNCTIONS, measure, render

HANDLERS = sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))


@pytest.mark.parametrize("name", HANDLERS)
def test_handler_imports_cold_without_aws(name: str) -> None:
    figures = measure("app", FUNCTIONS / name, runs=1)  # raises when the import fails (an AWS call would)
    assert figures["median_ms"] > 0
    assert figures["heaviest_packages_ms"], "python -X importtime gave no breakdown"
    # a Lambda's process is its handler's: the collector's thresholds are set by the import (gc_policy)
    assert figures["gc_thresholds"] == list(THRESHOLDS)
    if name in ("ingest_webhook", "ingest_optout"):
        # The public routes answer 401/400/413 without AWS; boto3 and requests load on first use only (the
        # opt-out route's Lambda imports its intake, not the write-back with its API clients).
        assert not figures["loads_boto3"] and not figures["loads_requests"]


def test_render_is_a_table() -> None:
    row = {"median_ms": 1.0, "min_ms": 1.0, "runs": 1, "loads_boto3": True, "loads_requests": False}
    text = render(
        {
            "command": "python -m bench.coldstart",
            "method": "m",
            "boto3": {**row, "heaviest_packages_ms": {"botocore": 0.5}},
            "handlers": {"x": {**row, "vs_boto3": 1.0, "heaviest_packages_ms": {}}},
        }
    )
    assert "| `import boto3` alone | 1.0 | 1.00 | yes | no | botocore 0.5 |" in text
    assert "| x | 1.0 | 1.0 | yes | no |  |" in text
