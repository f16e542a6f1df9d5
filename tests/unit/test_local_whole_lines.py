"""The local stack's log keeps each thread's lines whole (local/whole_lines.py): `print` writes its text and its
newline in two calls, and a line another thread logged between them was glued to the first (an EMF metrics
document and a webhook's "change queued" line on one line, which no JSON reader parses)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from efficy_sync_tools.local.whole_lines import WholeLines

from tests.support import ROOT


def _interleaved(stream: io.StringIO | WholeLines) -> None:
    """Thread A prints a line in two writes (as print does); thread B writes a whole line between them."""
    first_half, other_line_written = threading.Event(), threading.Event()

    def a() -> None:
        stream.write('{"_aws": 1}')
        first_half.set()
        other_line_written.wait(5)
        stream.write("\n")

    def b() -> None:
        first_half.wait(5)
        stream.write('{"message": "change queued"}\n')
        other_line_written.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_a_plain_stream_glues_the_two_lines_which_is_the_defect() -> None:
    target = io.StringIO()
    _interleaved(target)
    assert _lines(target.getvalue()) == ['{"_aws": 1}{"message": "change queued"}', ""]


def test_whole_lines_writes_each_thread_s_line_whole() -> None:
    target = io.StringIO()
    _interleaved(WholeLines(target, threading.Lock()))
    assert sorted(_lines(target.getvalue())) == ['{"_aws": 1}', '{"message": "change queued"}']
    assert all(json.loads(line) for line in _lines(target.getvalue()))


def test_an_explicit_flush_sends_the_unfinished_line() -> None:
    target = io.StringIO()
    stream = WholeLines(target, threading.Lock())
    print("waiting", end="", file=stream)
    assert target.getvalue() == ""
    stream.flush()
    print(" done", file=stream)
    assert target.getvalue() == "waiting done\n"


_MANY_WRITERS = """
import json, logging, sys, threading
from efficy_sync_tools.local.whole_lines import install
install()
handler = logging.StreamHandler(sys.stdout)
log = logging.getLogger("w"); log.addHandler(handler); log.setLevel(logging.INFO)
def work(n):
    for i in range(400):
        print(json.dumps({"_aws": {"n": n, "i": i}, "pad": "x" * 300}))  # EMF's way: print
        log.info(json.dumps({"message": "change queued", "n": n, "i": i}))  # the Logger's way
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
"""


def test_many_threads_printing_and_logging_to_one_file_leave_only_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "stack.log"
    env = {"PATH": "", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "tools")}  # unbuffered, as here
    with out.open("w") as log:
        subprocess.run([sys.executable, "-c", _MANY_WRITERS], stdout=log, stderr=subprocess.STDOUT, env=env, timeout=60)
    lines = out.read_text().splitlines()
    assert len(lines) == 8 * 400 * 2
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_local_up_installs_it_before_anything_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from efficy_sync_tools.commands.local import up_command

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # put back after the test
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    args = argparse.Namespace(ready_file=tmp_path, quiet=True, output="text")  # a folder: refused before starting
    assert up_command(args) != 0
    assert isinstance(sys.stdout, WholeLines) and isinstance(sys.stderr, WholeLines)
