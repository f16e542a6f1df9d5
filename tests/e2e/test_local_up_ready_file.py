"""`efficy-sync local up --ready-file F` as a user meets it: a folder that cannot be written was found only after
the stack had started, with a traceback; and two `local up` started together with one ready file both ran (the
live-stack check only sees a file written once a stack is up), the later overwrote the other's file. The ready
file is now claimed (a lock beside it, created exclusively) before the stack starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]


def _env() -> dict[str, str]:
    return {
        "HOME": os.environ.get("HOME", "/tmp"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }


def _up(ready: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "efficy_sync_tools.cli", "local", "up", "--quiet", "--ready-file", str(ready)]
    with log.open("w") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_ready_file_in_a_folder_that_cannot_be_written_gets_a_message_not_a_traceback(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes through file modes: /proc is a folder nobody can create a file in
        ready = Path("/proc/efficy-sync-probe-ready.json")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        ready = folder / "ready.json"
    result = subprocess.run(
        [sys.executable, "-m", "efficy_sync_tools.cli", "local", "up", "--quiet", "--ready-file", str(ready)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(ready) in result.stderr


def test_two_local_up_started_together_with_one_ready_file_do_not_both_run(tmp_path: Path) -> None:
    """The guard of `up_command` (`_live_stack`) only sees a stack whose file is already written: two started
    together both pass it, both start, and the later writer silently takes the file from the other."""
    ready = tmp_path / "ready.json"
    first = _up(ready, tmp_path / "a.log")
    second = _up(ready, tmp_path / "b.log")
    try:
        deadline = time.monotonic() + 120
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        while time.monotonic() < deadline:
            settled = [
                p.poll() is not None or "local stack ready" in log.read_text()
                for p, log in zip((first, second), logs, strict=True)
            ]
            if all(settled):
                break
            time.sleep(0.3)
        running = [p for p in (first, second) if p.poll() is None]
        assert len(running) == 1, f"{len(running)} stacks run with the one ready file {ready}:\n" + "\n".join(
            log.read_text()[-500:] for log in logs
        )
    finally:
        _stop(first)
        _stop(second)
