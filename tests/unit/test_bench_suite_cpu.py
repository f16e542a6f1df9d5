"""bench.suite_cpu charges each process that ran during the suite to its kind (the CPU split of make test)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from bench.suite_cpu import kind, sample


def test_kinds_read_from_the_command_line() -> None:
    assert kind("python -m efficy_sync_tools.local.moto_process --port 0") == "moto server"
    assert kind(".venv/bin/efficy-sync local up --ready-file r.json") == "local stack (local up)"
    assert kind("python -m efficy_sync_tools.cli health demo") == "CLI subprocess"
    assert kind("/x/bin/efficy-sync explain demo 1001") == "CLI subprocess"
    assert kind("python -u -c import sys;exec(eval(sys.stdin.readline()))") == "pytest worker"
    assert kind("python -m pytest -n 3") == "pytest"
    assert kind("bash -c true") == "other"


def test_each_process_started_during_the_run_is_counted_once_by_its_kind() -> None:
    stop = threading.Event()
    found: list = []
    # this process's own children only: other tests of the suite start CLI processes at the same time
    sampler = threading.Thread(target=lambda: found.append(sample(stop, os.getpid())))
    sampler.start()
    for _ in range(2):  # a command line naming the CLI module: a CLI call, whatever it does
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)  # efficy_sync_tools.cli"], check=True)
    stop.set()
    sampler.join(30)
    _, count = found[0]
    assert count["CLI subprocess"] == 2
    assert count["moto server"] == 0
    assert count["pytest"] + count["pytest worker"] == 1  # this process: its own kind, counted once
