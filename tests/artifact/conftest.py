"""`built`: the `sam build` output, built once per test run and reused while the sources are unchanged.

The build costs about a minute the first time (the layer's arm64 wheels come from the package index) and a few
seconds when SAM's own cache holds the dependencies; nothing is built when `.aws-sam/build` was built by this
fixture from the sources as they are now (a digest of every file `sam build` reads). pytest-xdist runs two
workers: a file lock lets one of them build while the other waits for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / ".aws-sam" / "build"
#: what `make build` reads: the template, its build settings (the Makefile compiles the byte code), every
#: function's code and the layer's content
SOURCES = ("template.yaml", "samconfig.toml", "Makefile", "functions", "layers/shared/python")
_DIGEST_FILE = BUILD_DIR / ".source-digest"
_LOCK_FILE = ROOT / ".aws-sam" / "build.lock"
_LOCK_WAIT_S = 900


def source_digest() -> str:
    """sha256 over the path and bytes of every source file (caches and byte code left out)."""
    digest = hashlib.sha256()
    for entry in SOURCES:
        base = ROOT / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@contextmanager
def _locked() -> Iterator[None]:
    _LOCK_FILE.parent.mkdir(exist_ok=True)
    with _LOCK_FILE.open("w") as lock:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another test worker held {_LOCK_FILE.name} for {_LOCK_WAIT_S} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_build() -> Path:
    """`make build` unless `.aws-sam/build` already holds a build of the current sources; returns it."""
    with _locked():
        digest = source_digest()
        if _DIGEST_FILE.is_file() and _DIGEST_FILE.read_text() == digest and (BUILD_DIR / "template.yaml").is_file():
            return BUILD_DIR
        _DIGEST_FILE.unlink(missing_ok=True)
        result = subprocess.run(
            ["make", "--no-print-directory", "build"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=_LOCK_WAIT_S - 60,
        )
        if result.returncode != 0:
            pytest.fail(f"make build failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        _DIGEST_FILE.write_text(digest)
        return BUILD_DIR


@pytest.fixture(scope="session")
def built() -> Path:
    return ensure_build()
