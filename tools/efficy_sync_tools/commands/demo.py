"""`efficy-sync demo` (what `make run` runs): the product end to end on the embedded local stack.

It starts the local stack in this process, seeds the Efficy simulator, changes persons the way a CRM user
would (Efficy then calls our signed webhook), waits for the result in the APSIS simulator, and prints a
report. Every wait is bounded; a missing result fails the demo with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from efficy_sync_tools.commands._args import positive_float, positive_int

if TYPE_CHECKING:  # every CLI command imports this module to register it: requests is loaded by the demo only
    import requests

# Run in this order after the real-time steps; each module has run(ready, say, timeout).
DEMO_STEPS = ["full_sync", "optout"]


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the product end to end on the local stack and print a report")
    demo.add_argument("--persons", type=positive_int, default=20, help="persons to seed in the Efficy simulator")
    demo.add_argument(
        "--timeout", type=positive_float, default=120.0, help="seconds to wait for each step (a bound, not a pace)"
    )
    demo.set_defaults(func=demo_command)


#: where the narration goes: stdout, or stderr under `--output json` (stdout then holds one JSON document)
_narration: list[Any] = [None]


def say(text: str = "") -> None:
    print(text, file=_narration[0] or sys.stdout, flush=True)


def _result(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if getattr(args, "output", "text") == "json":
        print(json.dumps(document), flush=True)


def demo_persons(n: int) -> list[dict[str, Any]]:
    """A small CRM (keys 1001 on): most persons active, some not, some on the Robinson list; mixed consents."""
    from efficy_sync_tools.testing import crm_persons

    return crm_persons(range(1001, 1001 + n))


def demo_command(args: argparse.Namespace) -> int:
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from efficy_sync_tools.local.stack import LocalStack
    from efficy_sync_tools.local.whole_lines import install

    install()  # the functions' threads log to the stdout the narration uses: whole lines each (whole_lines.py)
    started = time.monotonic()
    _narration[0] = sys.stderr if getattr(args, "output", "text") == "json" else None
    say("== efficy-sync demo: Efficy Enterprise -> APSIS One, offline ==")
    say("Starting the local stack (moto, template.yaml, simulators)...")
    stack = LocalStack()
    try:
        ready = stack.start()
        say(f"  ready in {time.monotonic() - started:.1f}s  api={ready['api_url']}")
        return run_scenario(ready, args)
    except (TimeoutError, AssertionError) as exc:
        say(f"DEMO FAILED: {exc}")
        _result(args, {"demo": "failed", "error": str(exc), "seconds": round(time.monotonic() - started, 1)})
        return 1
    finally:
        stack.stop()


def run_scenario(ready: dict[str, Any], args: argparse.Namespace) -> int:
    import requests

    from efficy_sync_tools.testing import wait_for

    efficy, apsis = ready["efficy_url"], ready["apsis_url"]
    http = requests.Session()
    persons = demo_persons(args.persons)
    http.post(f"{efficy}/_sim/persons", json={"persons": persons}, timeout=10).raise_for_status()
    say(f"Seeded {len(persons)} persons in the Efficy simulator.")

    # 1. Real-time: a CRM user edits a person; Efficy sends a signed webhook; the worker applies it.
    person = next(p for p in persons if p["OPENED"] == "1" and p["ROBINSON"] == "0")  # one the conditions sync
    key = person["K_CONTACT"]
    say(f"\n-- Real-time sync: a CRM user edits person {key} in Efficy --")
    http.patch(f"{efficy}/_sim/persons/{key}", json={"FIRSTNAME": "Jo"}, timeout=10).raise_for_status()
    # The worker creates the profile, then writes its attributes and consents: wait for the edit, not the key.
    profile = wait_for(
        f"person {key} in APSIS One with the edit",
        lambda: (
            (p := _profile(http, apsis, str(key)))
            and p["attributes"].get("com.apsis1.attributes.firstname") == "Jo"
            and p
        ),
        args.timeout,
    )
    _print_profile(profile)
    attributes = profile["attributes"]
    assert attributes.get("com.apsis1.attributes.firstname") == "Jo", attributes
    assert attributes.get("com.apsis1.attributes.email") == person["EMAIL1"], "e-mail attribute missing"

    # 2. A person who fails the sync conditions is not created.
    robinson = next(p for p in persons if p["ROBINSON"] == "1" and p["OPENED"] == "1")
    say(f"\n-- Sync conditions: person {robinson['K_CONTACT']} is on the Robinson list --")
    http.patch(f"{efficy}/_sim/persons/{robinson['K_CONTACT']}", json={"FIRSTNAME": "Robin"}, timeout=10)
    wait_for(
        "the Robinson person to be processed",
        lambda: _state_outcome(ready, robinson["K_CONTACT"]) == "skipped",
        args.timeout,
    )
    assert _profile(http, apsis, str(robinson["K_CONTACT"])) is None, "a Robinson person reached APSIS One"
    say("  skipped, as configured: not created in APSIS One")

    # 3. The other features, each a step module of its own (full sync, consent write-back).
    for step in DEMO_STEPS:
        module = importlib.import_module(f"efficy_sync_tools.demo_steps.{step}")
        module.run(ready, say, args.timeout)

    calls = http.get(f"{apsis}/_sim/calls", timeout=10).json()
    say("\n-- APSIS One API calls made --")
    for route, count in sorted(calls.items()):
        say(f"  {count:4d}  {route}")
    say("\nDEMO OK")
    _result(args, {"demo": "ok", "persons": len(persons), "apsis_calls": calls})
    return 0


def _profile(http: requests.Session, apsis: str, key: str) -> dict[str, Any] | None:
    response = http.get(f"{apsis}/_sim/profiles/com.apsis1.keyspaces.crm-id/{key}", timeout=10)
    return response.json() if response.status_code == 200 else None


def _state_outcome(ready: dict[str, Any], key: int) -> str | None:
    from efficy_sync.store.persons import PersonStateStore

    table = ready["stack"]["StateTable"]
    state = PersonStateStore(table).get("demo", key)
    return state.last_outcome if state else None


def _print_profile(profile: dict[str, Any]) -> None:
    from efficy_sync.pii import mask_value

    say(f"  APSIS profile {profile['keyspace']}/{profile['key']}")
    for name, value in sorted(profile["attributes"].items()):
        shown = mask_value(name.rsplit(".", 1)[-1].upper(), value)  # as `explain` shows them
        say(f"    {name} = {shown}")
    for consent in profile.get("consents", []):
        say(f"    consent {consent['topic']} [{consent['channel']}] = {consent['type']}")
    if profile.get("tags"):
        say(f"    tags: {', '.join(sorted(profile['tags']))}")
