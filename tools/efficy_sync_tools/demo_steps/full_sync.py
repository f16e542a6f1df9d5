"""Demo step: a full sync of a few thousand persons, with its progress bar, while real-time changes arrive.

Called by `efficy-sync demo` with the local stack running in the same process. It seeds the Efficy simulator,
starts a full sync of the demo integration through Step Functions (as `efficy-sync full-sync start` does),
edits a few persons the way a CRM user would (their changes are parked while the sync runs), prints the
progress until the end, then the report, and checks that APSIS One holds every synced person and that the
parked changes were applied after the sync. Any failure raises AssertionError or TimeoutError.

The initial load uses bulk-import writes (the faster mode for many new profiles, see BENCHMARKS.md); the demo
integration's previous config is applied again afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from efficy_sync_tools.testing import wait_for

FIRST_KEY = 20_001
PERSONS = 3_000
VIP_QUERY = 3618
KEYSPACE = "com.apsis1.keyspaces.crm-id"


def crm(n: int = PERSONS) -> list[dict[str, Any]]:
    """Persons of every kind: most synced, some inactive or on the Robinson list, mixed consents."""
    persons = []
    for i in range(n):
        persons.append(
            {
                "K_CONTACT": FIRST_KEY + i,
                "NAME": f"Family{i}",
                "FIRSTNAME": f"Person{i}",
                "EMAIL1": f"person{FIRST_KEY + i}@example.com",
                "MOBILE": f"+3248{i:07d}",
                "LANGUAGE": ("EN", "FR", "NL")[i % 3],
                "OPENED": "0" if i % 9 == 0 else "1",
                "ROBINSON": "1" if i % 14 == 0 else "0",
                "profiles": [p for p, on in ((12, i % 2 == 0), (13, i % 5 == 0), (14, i % 3 == 0)) if on],
            }
        )
    return persons


def _synced(person: dict[str, Any]) -> bool:
    return person["OPENED"] == "1" and person["ROBINSON"] == "0"


def run(ready: dict[str, Any], say: Callable[[str], None], timeout: float) -> None:
    from efficy_sync.settings import settings
    from efficy_sync.store.configs import ConfigStore

    http = requests.Session()
    efficy = ready["efficy_url"]
    persons = crm()
    say(f"\n-- Full sync: {len(persons):,} persons, paged in parallel by Step Functions --")
    http.post(f"{efficy}/_sim/persons", json={"persons": persons}, timeout=120).raise_for_status()
    vip = [p["K_CONTACT"] for p in persons[::25]]
    http.post(
        f"{efficy}/_sim/queries",
        json={"queries": [{"K_QUERY": VIP_QUERY, "name": "VIP", "members": vip}]},
        timeout=30,
    ).raise_for_status()
    say(f"  seeded {len(persons):,} persons in the Efficy simulator ({len(vip)} in the VIP query)")

    store = ConfigStore(settings().config_table)
    original = store.get("demo")
    bulk = original.model_copy(update={"full_sync": original.full_sync.model_copy(update={"write_mode": "import"})})
    version = store.put(bulk, applied_by="demo", comment="bulk-import writes for the initial load")
    say(f"  demo integration config v{version}: full_sync.write_mode = import (bulk imports for new profiles)")
    try:
        _sync_and_check(ready, say, timeout, http, persons, set(vip))
    finally:
        store.put(original, applied_by="demo", comment="back to the previous full-sync settings")


def _sync_and_check(
    ready: dict[str, Any],
    say: Callable[[str], None],
    timeout: float,
    http: requests.Session,
    persons: list[dict[str, Any]],
    vip: set[int],
) -> None:
    from efficy_sync.aws import client
    from efficy_sync.fullsync.parking import ParkingLot
    from efficy_sync.fullsync.report import render_report
    from efficy_sync.fullsync.runs import RunStore
    from efficy_sync.settings import settings

    from efficy_sync_tools.commands.full_sync import progress_lines

    efficy, apsis = ready["efficy_url"], ready["apsis_url"]
    runs = RunStore(settings().state_table)
    parking = ParkingLot(settings().state_table, runs)
    name = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    arn = client("stepfunctions").start_execution(
        stateMachineArn=ready["stack"]["state_machine_arn"],
        name=name,
        input=json.dumps({"integration_id": "demo", "dry_run": False}),
    )["executionArn"]
    say(f"  started execution {name}  (same as: efficy-sync full-sync start demo --follow)")
    run = wait_for(f"the run of {name} to begin", lambda: _run_of(runs, arn), timeout, interval=0.3)

    # A CRM user keeps working meanwhile: these changes are parked until the sync ends, then applied.
    edited = {persons[i]["K_CONTACT"]: f"Live{i}" for i in (1, 2, 4) if _synced(persons[i])}
    for key, first_name in edited.items():
        http.patch(f"{efficy}/_sim/persons/{key}", json={"FIRSTNAME": first_name}, timeout=10).raise_for_status()
    say(f"  meanwhile a CRM user edits persons {', '.join(map(str, edited))} (Efficy sends the webhooks)")
    deleted = {persons[i]["K_CONTACT"] for i in (7, 8)}
    for key in sorted(deleted):
        http.delete(f"{efficy}/_sim/persons/{key}", timeout=10).raise_for_status()
    say(
        f"  and deletes persons {', '.join(map(str, sorted(deleted)))}: Efficy's numbered pages shift, so the run "
        "re-reads its page boundaries before it ends"
    )

    last: tuple[Any, ...] = ()
    deadline = time.monotonic() + timeout
    while True:
        run = runs.get("demo", run.run_id) or run
        c = run.counters
        seen = (c.get("pages_done"), c.get("persons"), c.get("parked_messages"), run.status)
        if seen != last:
            lines = progress_lines(run, parking.count("demo") if run.active else 0)
            say("  " + lines[1])
            say("  " + lines[2].strip())
            say("  " + lines[3].strip())
            last = seen
        if not run.active:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the full sync did not end within {timeout:.0f}s")
        time.sleep(0.5)
    say("")
    for line in render_report(run.report or {}):
        say("  " + line)
    assert run.status == "succeeded", f"the full sync ended {run.status}: {run.error}"

    # The deleted persons are left out: on_delete decides what happens to a profile that was already synced.
    expected = {str(p["K_CONTACT"]) for p in persons if _synced(p) and p["K_CONTACT"] not in deleted}
    profiles = http.get(f"{apsis}/_sim/profiles", timeout=60).json()["profiles"]
    ours = {str(p["K_CONTACT"]) for p in persons if p["K_CONTACT"] not in deleted}
    held = {p["key"]: p for p in profiles if p["key"] in ours}
    assert set(held) == expected, f"APSIS One holds {len(held)} of the {len(expected)} persons that match"
    tagged = {int(k) for k, p in held.items() if "vip" in p["tags"]}
    assert tagged == {k for k in vip if str(k) in expected}, "the VIP query tag does not mirror the query"

    def applied() -> bool:
        for key, first_name in edited.items():
            profile = http.get(f"{apsis}/_sim/profiles/{KEYSPACE}/{key}", timeout=10).json()
            if profile.get("attributes", {}).get("com.apsis1.attributes.firstname") != first_name:
                return False
        return True

    wait_for("the deferred real-time changes to be applied", applied, timeout, interval=0.3)
    c = run.counters
    synced = c.get("created", 0) + c.get("updated", 0) + c.get("unchanged", 0)
    earlier = synced - len(expected)  # the run reads the whole CRM: the persons of the real-time steps too
    also = f" + {earlier:,} matching persons seeded before this step = the {synced:,} synced" if earlier else ""
    say(
        f"  APSIS One holds all {len(expected):,} matching persons of the {len(persons) - len(deleted):,} left "
        f"here{also}; {len(tagged)} tagged vip (those of the {len(vip)} VIP query members who match)"
    )
    say(
        f"  the {len(edited)} edits and {len(deleted)} deletes made during the sync (the "
        f"{c.get('parked_messages', 0):,} deferred messages) were applied after it (newest data wins)"
    )


def _run_of(runs: Any, arn: str) -> Any:
    lock = runs.lock("demo")
    if lock is None or lock.execution_arn != arn:
        return None
    return runs.get("demo", lock.run_id)
