"""Cold-start import time of each Lambda handler, against `import boto3` alone.

Each measurement is a fresh interpreter laid out as Lambda lays it out (the function's folder and the shared
layer on sys.path, the template's environment variables set to dummies) that imports the handler module and
reports how long the import took. AWS is pointed at a closed port: a handler that called AWS while importing
would fail here instead of passing unnoticed. The median of several runs is kept; one more run under
`python -X importtime` names the top-level packages that cost the most.

`python -m bench.coldstart` prints the figures; `make bench` (bench/run.py) calls `bench()`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "shared" / "python"
FUNCTIONS = ROOT / "functions"

#: what template.yaml's Globals (and a few functions) set; the values only need to parse
DUMMY_ENV = {
    "POWERTOOLS_SERVICE_NAME": "efficy-sync",
    "POWERTOOLS_METRICS_NAMESPACE": "EfficySync",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "CONFIG_TABLE": "bench-config",
    "STATE_TABLE": "bench-state",
    "CONTACT_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/bench-contact-changes.fifo",
    "OPTOUT_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/bench-optouts",
    "STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:bench-full-sync",
    "PAGES_BUCKET": "bench-pages",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: any AWS call at import time fails loudly
    "AWS_MAX_ATTEMPTS": "1",
    # set on Lambda: the X-Ray SDK then takes its Lambda path (the sampling decision comes with the invocation).
    # Without it, importing the SDK built two botocore clients for the X-Ray daemon's sampling rules, 0.3 s of
    # every figure here that no Lambda cold start pays
    "LAMBDA_TASK_ROOT": "/var/task",
}

_PROBE = """
import gc, sys, time
t0 = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t0
print("GC", *gc.get_threshold())
print("ELAPSED", elapsed, "BOTO3" if "boto3" in sys.modules else "-", "REQUESTS" if "requests" in sys.modules else "-")
"""
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _env(function_dir: Path | None) -> dict[str, str]:
    paths = [str(p) for p in (function_dir, LAYER) if p is not None]
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {**keep, **DUMMY_ENV, "PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1"}


def _run(module: str, function_dir: Path | None, importtime: bool = False) -> subprocess.CompletedProcess:
    args = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", _PROBE.format(module=module)]
    result = subprocess.run(
        args, env=_env(function_dir), cwd=function_dir or ROOT, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {module} from {function_dir} failed:\n{result.stderr[-2000:]}")
    return result


def measure(module: str, function_dir: Path | None, runs: int) -> dict[str, Any]:
    """Median import time in ms over `runs` fresh interpreters, and the heaviest top-level imports."""
    times = []
    flags = ""
    thresholds: list[int] = []
    for _ in range(runs):
        out = _run(module, function_dir).stdout.split()
        times.append(float(out[out.index("ELAPSED") + 1]) * 1000)
        flags = " ".join(out[out.index("ELAPSED") + 2 :])
        thresholds = [int(v) for v in out[out.index("GC") + 1 : out.index("GC") + 4]]
    profile = _run(module, function_dir, importtime=True).stderr
    heaviest = sorted(_self_time_by_package(profile, module).items(), key=lambda item: -item[1])[:6]
    return {
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "runs": runs,
        "loads_boto3": "BOTO3" in flags,
        "loads_requests": "REQUESTS" in flags,
        "gc_thresholds": thresholds,  # what the import left set (efficy_sync.gc_policy)
        "heaviest_packages_ms": {name: round(us / 1000, 1) for name, us in heaviest},
    }


def _self_time_by_package(profile: str, module: str) -> dict[str, int]:
    """Self import time (us) per top-level package of what `import module` pulled in (interpreter start-up
    imports, listed before it, are left out)."""
    pending: list[tuple[str, int]] = []
    for line in profile.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        name, self_us, depth = match.group(4), int(match.group(1)), len(match.group(3))
        pending.append((name, self_us))
        if depth == 1:  # a top-level import is complete: its children were listed just before it
            if name == module:
                totals: dict[str, int] = {}
                for child, us in pending:
                    root = child.split(".")[0]
                    totals[root] = totals.get(root, 0) + us
                return totals
            pending = []
    return {}


def bench(quick: bool = False) -> dict[str, Any]:
    """{"boto3": {...}, "handlers": {name: {..., "vs_boto3": ratio}}, "command": ...}"""
    runs = 3 if quick else 7
    baseline = measure("boto3", None, runs)
    handlers: dict[str, Any] = {}
    for app in sorted(FUNCTIONS.glob("*/app.py")):
        figures = measure("app", app.parent, runs)
        figures["vs_boto3"] = round(figures["median_ms"] / baseline["median_ms"], 2)
        handlers[app.parent.name] = figures
    return {
        "command": "python -m bench.coldstart" + (" --quick" if quick else ""),
        "method": f"median of {runs} fresh interpreters importing the handler module (python -X importtime for the breakdown)",
        "boto3": baseline,
        "handlers": handlers,
    }


def render(results: dict[str, Any]) -> str:
    """A Markdown table of `bench()`'s results."""
    base = results["boto3"]
    lines = [
        "## Cold start",
        "",
        f"`{results['command']}`: {results['method']}.",
        "",
        "| handler | import (ms, median) | vs `import boto3` | loads boto3 | loads requests | heaviest packages (ms, self time) |",
        "|---|---:|---:|:---:|:---:|---|",
        f"| `import boto3` alone | {base['median_ms']} | 1.00 | yes | {'yes' if base['loads_requests'] else 'no'} | "
        + ", ".join(f"{k} {v}" for k, v in base["heaviest_packages_ms"].items())
        + " |",
    ]
    for name, f in results["handlers"].items():
        heaviest = ", ".join(f"{k} {v}" for k, v in f["heaviest_packages_ms"].items())
        lines.append(
            f"| {name} | {f['median_ms']} | {f['vs_boto3']} | {'yes' if f['loads_boto3'] else 'no'} | "
            f"{'yes' if f['loads_requests'] else 'no'} | {heaviest} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    data = bench(quick="--quick" in sys.argv)
    print(render(data))
    if "--json" in sys.argv:
        print(json.dumps(data, indent=2))
