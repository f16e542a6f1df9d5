"""bench.suite_cpu charges each process that ran during the suite to its kind (the CPU split of make test)."""

from __future__ import annotations

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
    assert kind(".venv-sam/bin/python .venv-sam/bin/sam build --cached") == "sam build"
    assert kind("python -c 'time.sleep(0.3)  # let the sampler see it'") == "other"  # "sam" alone is no sam
    assert kind("bash -c true") == "other"


_PARENT = """
import subprocess, sys, time
time.sleep(0.3)  # let the sampler see this process before its children
module = "efficy_sync_tools" + ".cli"  # named in the children's command line only, not in this one's
for _ in range(2):  # a command line naming the CLI module: a CLI call, whatever it does
    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)  # " + module], check=True)
"""


def test_each_process_of_the_tree_is_counted_once_by_its_kind() -> None:
    # a tree of its own: the test worker's other descendants (its local stacks, their moto servers) stay out
    parent = subprocess.Popen([sys.executable, "-c", _PARENT])
    stop = threading.Event()
    found: list = []
    sampler = threading.Thread(target=lambda: found.append(sample(stop, parent.pid)))
    sampler.start()
    assert parent.wait(30) == 0
    stop.set()
    sampler.join(30)
    _, count = found[0]
    assert count == {"CLI subprocess": 2, "other": 1}  # the two calls, and the parent
