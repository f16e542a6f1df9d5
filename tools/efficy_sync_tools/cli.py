"""`efficy-sync`: the admin's command line. Talks to AWS through boto3's standard environment.

Each command group lives in its own module and is imported only when used, so `--help` stays instant.

Global options (`--region`, `--profile`, `--output`) are accepted before the command, as the AWS CLI takes
them, and after it (`efficy-sync full-sync status demo --output json`); they win over the environment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from efficy_sync_tools import commands
from efficy_sync_tools.commands._aws import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED

OUTPUTS = ("text", "json")


def command_modules() -> list[str]:
    """Every module of efficy_sync_tools.commands with a `register(subparsers)`; keep their top-level imports light."""
    return sorted(
        f"{commands.__name__}.{m.name}" for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")
    )


def version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("efficy-sync")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked: importlib.metadata costs every other command
    about 50 ms (each `efficy-sync` call builds the whole parser)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    #: the command line being parsed (set by `main`): `--output json` may come after `--version`, unparsed yet
    argv: Sequence[str] = ()

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: object) -> None:
        if getattr(namespace, "output", None) == "json" or _asks_json(self.argv):
            print(json.dumps({"version": version()}))
        else:
            print(f"efficy-sync {version()}")  # on stdout, as argparse's own version action
        parser.exit()


def _asks_json(argv: Sequence[str]) -> bool:
    """`--output json` or `--output=json` anywhere on the line."""
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return any(a == "--output=json" or (a == "--output" and b == "json") for a, b in pairs)


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """On the top parser with defaults; on every command's parser with SUPPRESS, so a value given after the
    command wins and one given before it is not overwritten by the command's default."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("global options")
    group.add_argument("--region", default=default(None), help="AWS region (default: $AWS_REGION / the profile's)")
    group.add_argument("--profile", default=default(None), help="AWS named profile (default: $AWS_PROFILE)")
    group.add_argument(
        "--output",
        choices=OUTPUTS,
        default=default("text"),
        help="text for people, json for scripts (a stable document per command)",
    )


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser that ends a command line (those without sub-commands of their own)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: argparse's default took `--onlin` for `--online` and `--fi` for `--fix`, so a
    typo ran something else than what was typed (`reconcile --fi` repaired). The subcommands' parsers are this class
    too (argparse builds them with the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="efficy-sync",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        module = importlib.import_module(name)
        if hasattr(module, "register"):
            module.register(sub)
    for leaf in _leaf_parsers(parser):
        if leaf is not parser:
            _add_global_options(leaf, top=False)
    return parser


def apply_global_options(args: argparse.Namespace) -> None:
    """--region / --profile go into the environment before any boto3 client exists (the library's clients
    read it); AWS_REGION is honoured (boto3 itself reads only AWS_DEFAULT_REGION or the profile's region)."""
    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    if args.region:
        os.environ["AWS_REGION"] = args.region
        os.environ["AWS_DEFAULT_REGION"] = args.region
    elif os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]
    # Commands that had their own --format before --output existed: `--output json` means their JSON.
    if args.output == "json" and "format" in vars(args) and args.format in (None, "text", "yaml"):
        args.format = "json"


def main(argv: Sequence[str] | None = None) -> int:
    # results on stdout, the library's logs on stderr (efficy_sync.observability reads this at import)
    os.environ.setdefault("EFFICY_SYNC_LOG_STREAM", "stderr")
    # a value no UTF-8 can carry (a lone surrogate from a JSON escape in a config file or an answer) is shown
    # escaped instead of ending the command with a traceback half-way through its output
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    _VersionAction.argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    apply_global_options(args)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (`| head`): nothing to say and nobody to say it to. Python would
        # report the failed flush at exit once more, so stdout points at nothing from here on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
