"""`efficy-sync`: the admin's command line (DESIGN §5). Talks to AWS through boto3's standard environment.

Each command group lives in its own module and is imported only when used, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from efficy_sync_tools import commands


def command_modules() -> list[str]:
    """Every module of efficy_sync_tools.commands with a `register(subparsers)`; keep their top-level imports light."""
    return sorted(
        f"{commands.__name__}.{m.name}" for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="efficy-sync", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        module = importlib.import_module(name)
        if hasattr(module, "register"):
            module.register(sub)
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
