"""`local up --ready-file F` claims F.lock before the stack starts (commands/local._claim). Two gaps a reviewer
found in its first form: a lock whose PID was this very process (a container restarted after a kill hands out the
same small PIDs again) was refused for good, its message not naming the lock to delete; and the lock was created
first and written after, so a second `local up` looking in between read an empty lock as a dead process's, took
it over, and both stacks ran. The lock is now linked into place whole, and our own PID is no other stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from efficy_sync_tools.commands import local


def test_a_stale_lock_holding_our_own_pid_is_taken_over(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    (tmp_path / "ready.json.lock").write_text(str(os.getpid()))  # left by a killed process that had our PID
    claimed = local._claim(ready)
    assert isinstance(claimed, Path), f"refused a lock no other process holds: {claimed}"
    assert claimed.read_text() == str(os.getpid())


def test_the_lock_appears_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_link = os.link

    def link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        seen.append(Path(source).read_text())  # what a reader of the lock sees the moment it exists
        real_link(source, target)

    monkeypatch.setattr(local.os, "link", link)
    claimed = local._claim(tmp_path / "ready.json")
    assert isinstance(claimed, Path) and seen == [str(os.getpid())]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready.json.lock"]  # no temporary file left


def test_a_live_stack_s_lock_is_refused_and_named(tmp_path: Path) -> None:
    lock = tmp_path / "ready.json.lock"
    lock.write_text(str(os.getppid()))  # a live process other than this one
    refused = local._claim(tmp_path / "ready.json")
    assert isinstance(refused, str) and str(lock) in refused
