"""`efficy-sync demo` as a user runs it (a subprocess, with only the environment the README gives)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]


def test_demo_with_output_json_prints_one_json_document_and_narrates_on_stderr() -> None:
    """Found by probing: `demo --output json` printed its narration on stdout, which no script could parse,
    though the README says every command takes --output json."""
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [sys.executable, "-m", "efficy_sync_tools.cli", "demo", "--persons", "30", "--output", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert document["demo"] == "ok" and document["persons"] == 30
    assert sum(document["apsis_calls"].values()) > 0
    assert "DEMO OK" in result.stderr
