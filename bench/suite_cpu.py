"""Where `make test`'s CPU goes, by kind of process: `python -m bench.suite_cpu [pytest args]`.

Issue 13 asks for a test suite no slower than about 4.5 minutes of pytest on 2 cores. A run here spends about 830
CPU-seconds in about 480 s of wall time: the suite is CPU-bound (two cores give at most 2 x 480), so waiting less
(sleeps, polls) cannot bring it near 270 s; the CPU must go down, and this says whose it is. The pytest processes
themselves (in-process moto, unit tests), the CLI subprocesses the e2e tests run as a user would (one Python
interpreter, boto3 and our modules each), the local stacks (`local up`) and their moto servers, and `sam build`.

It samples /proc every 0.05 s while pytest runs (as `make test` runs it, or with the arguments given) and charges
each process's CPU to its kind when it ends, as it was at the last sample: up to 0.05 s of each process is missed
(a CLI call lives about half a second). The total is exact: pytest's own resource usage, its reaped descendants
included (wait4); what the samples missed is printed as "not attributed". Linux only.
Not part of `make bench`: it runs the whole suite (8 minutes here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.cpu import _TICK

ROOT = Path(__file__).resolve().parents[1]
#: (kind, a fragment of the command line that tells it): first match wins
KINDS = (
    ("moto server", "moto_process"),
    ("local stack (local up)", "local up"),
    ("CLI subprocess", "efficy_sync_tools.cli"),
    ("CLI subprocess", "bin/efficy-sync"),
    ("pytest worker", "exec(eval(sys.stdin"),
    ("pytest", "pytest"),
    ("sam build", "bin/sam"),
    ("node (cfn checks)", "node_modules"),
)


def kind(command: str) -> str:
    return next((name for name, fragment in KINDS if fragment in command), "other")


#: samples (0.05 s each) during which a new process's command line is read again: between fork and exec a child
#: shows its parent's; later it is read no more (the sampler's own CPU stays small)
RECHECKS = 10


def _stat(pid: str) -> tuple[str, int] | None:
    """(parent pid, CPU ticks so far) of a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return stat[1], int(stat[11]) + int(stat[12])


def _command(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def sample(stop: threading.Event, root: int) -> tuple[Counter[str], Counter[str]]:
    """(CPU ticks, processes) per kind of `root` and its descendants, until `stop` (a process whose parent ended
    before a sample saw it is not counted: "not attributed" in main)."""
    ours = {str(root)}
    alive: dict[str, tuple[str, int]] = {}
    looked: Counter[str] = Counter()
    ticks: Counter[str] = Counter()
    count: Counter[str] = Counter()
    while True:
        found = {}
        for pid in Path("/proc").iterdir():
            if pid.name.isdigit():
                read = _stat(pid.name)
                if read is not None:
                    found[pid.name] = read
        grown = True
        while grown:  # descendants: parents first, whatever the order /proc lists them in
            new = {pid for pid, (parent, _) in found.items() if parent in ours and pid not in ours}
            ours |= new
            grown = bool(new)
        for pid, (_, used) in found.items():
            if pid not in ours:
                continue
            named = alive.get(pid, ("other", 0))[0]
            if looked[pid] < RECHECKS:
                looked[pid] += 1
                command = _command(pid)
                if command:  # a zombie shows none: it keeps the kind it had
                    named = kind(command)
            alive[pid] = (named, used)
        for pid in [p for p in alive if p not in found]:
            name, used = alive.pop(pid)
            ticks[name] += used
            count[name] += 1
            ours.discard(pid)  # its number may be given to another process
            del looked[pid]
        if stop.is_set():
            break
        time.sleep(0.05)
    for name, used in alive.values():
        ticks[name] += used
        count[name] += 1
    return ticks, count


def main(args: list[str]) -> int:
    stop = threading.Event()
    result: list[tuple[Counter[str], Counter[str]]] = []
    started = time.monotonic()
    pytest_args = args or ["-n", "3", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider"]
    process = subprocess.Popen([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT)
    sampler = threading.Thread(target=lambda: result.append(sample(stop, process.pid)), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)  # the whole tree's CPU: every descendant pytest waited for
    process.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    stop.set()
    sampler.join(30)
    ticks, count = result[0]
    total = usage.ru_utime + usage.ru_stime
    print(
        f"\npytest exit {code}; {wall:.0f} s wall, {total:.0f} CPU-seconds ({total / wall:.2f} cores busy on average)"
    )
    missed = total - sum(ticks.values()) / _TICK
    rows = [(used / _TICK, count[name], name) for name, used in ticks.most_common()] + [(missed, 0, "not attributed")]
    for seconds, processes, name in rows:
        print(f"{seconds:8.1f} s  {seconds / total:5.1%}  {processes:5d} processes  {name}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
