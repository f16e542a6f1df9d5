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

from efficy_sync_tools.commands._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="the embedded local stack (moto + simulators)")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start the local stack and keep it running until Ctrl-C / SIGTERM")
    up.add_argument("--ready-file", type=Path, help="write the endpoints and the demo integration here when ready")
    up.add_argument("--quiet", action="store_true", help="only warnings from the handlers")
    up.set_defaults(func=up_command)
    seed = local_sub.add_parser(
        "seed",
        help="create N persons in the running local stack's Efficy simulator; Efficy sends their webhooks",
        description="Creates N persons in the Efficy simulator of the local stack started with "
        "`efficy-sync local up --ready-file F` (read from F), with the simulator's webhooks pointed at the "
        "stack's webhook route of the demo integration, so they reach APSIS One in real time.",
    )
    seed.add_argument("count", type=positive_int, metavar="N", help="how many persons")
    seed.add_argument(
        "--profiles",
        type=_profiles,
        default=None,
        metavar="ID[,ID...]",
        help="put every person in these CRM profiles (default: a mix of 12, 13 and 14, the demo's consents)",
    )
    seed.add_argument(
        "--start", type=positive_int, default=None, help="first K_CONTACT (default: after the highest one)"
    )
    seed.add_argument(
        "--ready-file",
        type=Path,
        default=Path(".ready.json"),
        help="the ready file of `local up` (default .ready.json)",
    )
    seed.add_argument("--no-webhooks", action="store_true", help="create them silently (a full sync will find them)")
    seed.set_defaults(func=seed_command)


def _profiles(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"CRM profile ids are whole numbers, comma-separated: {text!r}") from None


def write_ready_file(path: Path, ready: dict) -> None:
    """Atomic: a watcher never reads half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(ready, indent=2))
    os.replace(tmp, path)


def _live_stack(path: Path) -> str | None:
    """The AWS endpoint of a local stack that still answers at the address `path` names, or None (no file, not
    a ready file, or a stack that is gone: a crash leaves its file behind)."""
    import urllib.request

    try:
        endpoint = str(json.loads(path.read_text())["aws_endpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):  # noqa: S310 (a loopback address we wrote)
            return endpoint
    except OSError as exc:
        return endpoint if getattr(exc, "code", None) else None  # an HTTP error is an answer: it is alive


def _claim(path: Path) -> Path | str:
    """The lock beside the ready file, created exclusively before the stack starts: its path, or why not. Two
    `local up` started together both passed the live-stack check (a ready file is written only once the stack is
    up, seconds later) and the later one overwrote the other's file; a folder that cannot be written was found
    only after the stack had started, with a traceback. A lock a killed process left behind is taken over."""
    lock = path.with_suffix(path.suffix + ".lock")
    mine = path.with_suffix(f"{path.suffix}.lock.{os.getpid()}")
    try:
        mine.write_text(str(os.getpid()))  # whole before it is linked: a reader never sees an empty lock
    except OSError as exc:
        return f"{path}: cannot write in {path.parent} ({exc.strerror}); name a file in a folder you can write"
    try:
        for _ in range(2):
            try:
                os.link(mine, lock)  # atomic, and refused when the lock exists
                return lock
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    return (
                        f"{path} is being set up by another local stack (process {pid}): stop it, or name another "
                        f"file (a lock a crash left behind: delete {lock})"
                    )
                lock.unlink(missing_ok=True)  # its process is gone (or was this one, before a restart)
        return f"{path}: another local stack keeps claiming it; name another file"
    finally:
        mine.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _ours(path: Path, ready: dict | None) -> bool:
    """Whether `path` still holds this stack's ready document (it is removed on stop, another's is not)."""
    try:
        return ready is not None and json.loads(path.read_text()).get("aws_endpoint") == ready.get("aws_endpoint")
    except (OSError, ValueError, AttributeError):
        return False


def up_command(args: argparse.Namespace) -> int:
    from efficy_sync_tools.commands._aws import fail
    from efficy_sync_tools.local.stack import LocalStack
    from efficy_sync_tools.local.whole_lines import install

    install()  # every function logs from this process: one line each, never glued to another thread's
    if args.ready_file and (endpoint := _live_stack(args.ready_file)):
        # another stack's file: overwritten, then deleted when this one stops, it left that stack unusable
        return fail(
            f"{args.ready_file} belongs to a local stack that is still running ({endpoint}): stop it first, "
            "or give this one another --ready-file"
        )

    if args.ready_file and not args.ready_file.parent.is_dir():  # checked before the stack starts, not after
        return fail(f"{args.ready_file}: its folder {args.ready_file.parent} does not exist; create it or name another")
    if args.ready_file and args.ready_file.is_dir():
        return fail(f"{args.ready_file} is a folder: name a file in it, e.g. {args.ready_file / 'ready.json'}")
    lock: Path | None = None
    if args.ready_file:
        claimed = _claim(args.ready_file)
        if isinstance(claimed, str):
            return fail(claimed)
        lock = claimed

    level = "WARNING" if args.quiet else os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO")
    os.environ["POWERTOOLS_LOG_LEVEL"] = level
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack()
    ready: dict | None = None
    try:
        ready = stack.start()
        if args.ready_file:
            write_ready_file(args.ready_file, ready)
        if getattr(args, "output", "text") == "json":  # the ready document on stdout, for a script to read
            print(json.dumps(ready), flush=True)
        print(f"efficy-sync local stack ready: api {ready['api_url']}  aws {ready['aws_endpoint']}", file=sys.stderr)
        print(f"  efficy simulator {ready['efficy_url']}  apsis simulator {ready['apsis_url']}", file=sys.stderr)
        print("  Ctrl-C to stop", file=sys.stderr)
        stop.wait()
    finally:
        stack.stop()
        if args.ready_file and _ours(args.ready_file, ready):
            args.ready_file.unlink()
        if lock is not None:
            lock.unlink(missing_ok=True)
    return 0


def seed_persons(start: int, count: int, profiles: list[int] | None) -> list[dict]:
    """Persons like a small CRM's (see `crm_persons`): about 1 in 7 not opened and 1 in 5 on the Robinson list
    (neither synced by the demo's conditions), languages and consent profiles mixed unless `profiles` is given."""
    from efficy_sync_tools.testing import crm_persons

    return crm_persons(range(start, start + count), profiles)


def seed_command(args: argparse.Namespace) -> int:
    import requests

    from efficy_sync_tools.commands._aws import EXIT_UNREACHABLE, fail

    try:
        ready = json.loads(args.ready_file.read_text())
        efficy, api_url, demo = ready["efficy_url"], ready["api_url"], ready["demo"]
    except FileNotFoundError:
        return fail(
            f"{args.ready_file}: no such file; start the local stack first: "
            f"efficy-sync local up --ready-file {args.ready_file}"
        )
    except (ValueError, KeyError, TypeError, OSError) as exc:  # a folder, an unreadable file
        return fail(f"{args.ready_file} is not a ready file of `efficy-sync local up` ({exc})")
    http = requests.Session()
    try:
        existing = http.get(f"{efficy}/_sim/persons", timeout=10).json()["persons"]
        start = args.start or max([1000, *(int(p["K_CONTACT"]) for p in existing)]) + 1
        webhook = f"{api_url}/integrations/{demo['integration_id']}/efficy/webhook"
        if not args.no_webhooks:
            http.post(
                f"{efficy}/_sim/webhooks",
                json={"url": webhook, "secret": demo["webhook_secret"], "mode": "hmac", "batch_ms": 200},
                timeout=10,
            ).raise_for_status()
        persons = seed_persons(start, args.count, args.profiles)
        for i in range(0, len(persons), 1000):
            http.post(
                f"{efficy}/_sim/persons",
                json={"persons": persons[i : i + 1000], "notify": not args.no_webhooks},
                timeout=60,
            ).raise_for_status()
    except requests.ConnectionError:  # a ready file a stopped or crashed stack left behind
        return fail(
            f"the local stack of {args.ready_file} is not running (its Efficy simulator did not answer at {efficy}): "
            f"start it with `efficy-sync local up --ready-file {args.ready_file}`",
            EXIT_UNREACHABLE,
        )
    except requests.RequestException as exc:
        return fail(
            f"the local stack's Efficy simulator did not answer at {efficy} ({exc}); is it running?", EXIT_UNREACHABLE
        )
    matching = sum(1 for p in persons if p["OPENED"] == "1" and p["ROBINSON"] == "0")
    # --start may point into persons that exist: they are replaced (an upsert), and the output says so
    known = {int(p["K_CONTACT"]) for p in existing}
    replaced = sum(1 for p in persons if int(p["K_CONTACT"]) in known)
    result = {
        "created": len(persons) - replaced,
        "replaced": replaced,
        "first_key": persons[0]["K_CONTACT"],
        "last_key": persons[-1]["K_CONTACT"],
        "matching_demo_conditions": matching,
        "webhook": None if args.no_webhooks else webhook,
    }
    if getattr(args, "output", "text") == "json":
        print(json.dumps(result, indent=2))
        return 0
    done = f"Created {result['created']:,} persons" + (f" and replaced {replaced:,} existing ones" if replaced else "")
    print(
        f"{done} in the Efficy simulator (K_CONTACT {result['first_key']}..{result['last_key']}); "
        f"{matching:,} of them match the demo's sync conditions (OPENED=1, ROBINSON=0) and should reach APSIS One."
    )
    if args.no_webhooks:
        print("  No webhooks sent: run `efficy-sync full-sync start demo --follow` to sync them.")
    else:
        print(f"  Efficy sends their webhooks to {webhook}; watch one: efficy-sync explain demo {result['first_key']}")
    return 0
