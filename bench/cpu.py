"""CPU seconds of a bench phase, beside its wall time: the share of a ceiling read from CPU work, and how busy
other processes kept this shared 2-core machine meanwhile.

A profile of both diff-mode pairs (the session notes) showed the bench's own process (handlers, both simulators,
the Lambda relay, the bench's clients) CPU-bound on one core for the whole phase, and a first load also using
moto's process on the second core, which a replay hardly does (about 1 s). So load from other processes takes more
from a first load than from its replay, and the wall-time ratio of one pair swung by 0.2 between runs of the same
code. The machine's busy time beyond ours says how much the wall times can be trusted, and its steal time how much
of that was the host's: this machine is a virtual one, and when the host gives its CPUs to other guests our own CPU
seconds grow too (a first load took 112 s of this process's CPU against 95 s for the same load minutes earlier,
while the machine was busy 30 core-seconds beyond our processes and a sampler of /proc saw no other process run:
the host's time, not a neighbour's). So the CPU seconds are the work only on a quiet host. Linux only (/proc);
elsewhere the figures are absent.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int | None) -> float:
    """utime + stime of another process, in seconds (0 when it cannot be read)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5), after "pid (comm)"


def _machine_time() -> tuple[float, float]:
    """(busy, steal): core-seconds every process of the machine spent off idle since boot, and of those the
    time the hypervisor gave this machine's CPUs to another guest ((0, 0) when /proc/stat is absent)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    return (sum(values[:8]) - idle) / _TICK, steal / _TICK  # user .. steal; guest time is already in user


class GcPauses:
    """Collections by generation and the seconds they held the GIL, in this process while counting. A
    collection stops every thread of the process (handlers, simulators, clients), so on the local stack its
    pauses are wall time; the counts do not depend on the machine's speed (efficy_sync.gc_policy)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self._lock:  # only one thread collects at a time; the lock guards the figures against a reader
            if phase == "start":
                self._started[threading.get_ident()] = now
                return
            began = self._started.pop(threading.get_ident(), None)
            if began is not None:
                self.collections[int(info["generation"])] += 1
                self.seconds += now - began

    @contextmanager
    def counting(self) -> Iterator[GcPauses]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


@contextmanager
def cpu_use(stack: Any) -> Iterator[dict[str, Any]]:
    """Fills the yielded dict on exit: `own` (this process, every thread), `moto` (moto's server process),
    `work` (both), `wall`, `others` (core-seconds the rest of the machine was busy, over the phase), `steal` (the
    hypervisor's time for other guests, which can show in `own` as well as in `others`), and this
    process's garbage collections: `gc` (by generation, young first) and `gc_seconds` (their pauses)."""
    moto_pid = getattr(getattr(stack, "moto", None), "pid", None)
    figures: dict[str, Any] = {}
    pauses = GcPauses()
    wall, own, moto, (busy, steal) = time.monotonic(), time.process_time(), _process_cpu(moto_pid), _machine_time()
    try:
        with pauses.counting():
            yield figures
    finally:
        figures["gc"] = list(pauses.collections)
        figures["gc_seconds"] = round(pauses.seconds, 2)
        figures["own"] = round(time.process_time() - own, 1)
        figures["moto"] = round(_process_cpu(moto_pid) - moto, 1)
        figures["work"] = round(figures["own"] + figures["moto"], 1)
        figures["wall"] = round(time.monotonic() - wall, 1)
        busy_after, steal_after = _machine_time()
        figures["others"] = round(max(0.0, busy_after - busy - figures["work"]), 1)
        figures["steal"] = round(steal_after - steal, 1)  # the host's: it may show in `own` too, not only in `others`
