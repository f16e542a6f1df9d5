"""Probe: `full-sync status ID --follow --output json` must follow the run to its end, as `start --follow
--output json` does, instead of printing the running state at once and exiting 0."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.user_stack import UserStack, seed

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240), pytest.mark.xdist_group("user_stack")]


def test_status_follow_json_waits_for_the_end_of_the_run(user: UserStack, tmp_path: Path) -> None:
    seed(user, 5, "--no-webhooks")
    integration_id = user.own_integration(tmp_path)
    efficy = user.ready["efficy_url"]
    # slow Efficy's records export so the run is still going when `status --follow` starts watching
    slow = {"path_regex": "^/v1/records", "delay_ms": 1500, "count": 2}
    user.http.post(f"{efficy}/_sim/faults", json=slow, timeout=10).raise_for_status()
    try:
        started = user.json("full-sync", "start", integration_id)
        t0 = time.monotonic()
        followed = user.cli("full-sync", "status", integration_id, "--follow", "--output", "json", timeout=180)
        document = json.loads(followed.stdout)
        # README: `status [--follow]` redraws until the run ends; a script that follows in JSON gets the outcome
        assert document["run_id"] == started["run_id"]
        assert document["status"] == "succeeded", (
            f"`status --follow --output json` returned after {time.monotonic() - t0:.1f}s with status "
            f"{document['status']!r} (exit {followed.returncode}) while the run was still going"
        )
    finally:
        user.http.delete(f"{efficy}/_sim/faults", timeout=10)
