"""`efficy-sync`: the admin's command line (DESIGN §5). Talks to AWS through boto3's standard environment.

Each command group lives in its own module and is imported only when used, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that register a sub-command; their top-level imports stay light (heavy ones go inside the commands).
COMMANDS = [
    "efficy_sync_tools.commands.local",
    "efficy_sync_tools.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="efficy-sync", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
