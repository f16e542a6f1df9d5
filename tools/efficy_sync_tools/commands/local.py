"""`efficy-sync local up [--ready-file F]`: the embedded local stack, in the foreground until a signal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="the embedded local stack (moto + simulators)")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start the local stack and keep it running until Ctrl-C / SIGTERM")
    up.add_argument("--ready-file", type=Path, help="write the endpoints and the demo integration here when ready")
    up.add_argument("--quiet", action="store_true", help="only warnings from the handlers")
    up.set_defaults(func=up_command)


def write_ready_file(path: Path, ready: dict) -> None:
    """Atomic: a watcher never reads half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(ready, indent=2))
    os.replace(tmp, path)


def up_command(args: argparse.Namespace) -> int:
    from efficy_sync_tools.local.stack import LocalStack

    level = "WARNING" if args.quiet else os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO")
    os.environ["POWERTOOLS_LOG_LEVEL"] = level
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack()
    try:
        ready = stack.start()
        if args.ready_file:
            write_ready_file(args.ready_file, ready)
        print(f"efficy-sync local stack ready: api {ready['api_url']}  aws {ready['aws_endpoint']}", file=sys.stderr)
        print(f"  efficy simulator {ready['efficy_url']}  apsis simulator {ready['apsis_url']}", file=sys.stderr)
        print("  Ctrl-C to stop", file=sys.stderr)
        stop.wait()
    finally:
        stack.stop()
        if args.ready_file and args.ready_file.exists():
            args.ready_file.unlink()
    return 0
