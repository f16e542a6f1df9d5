"""What the demo, `local seed`, the benchmarks and the tests all do with a running stack, in one place: wait for
an event with a bound, and make a small CRM's persons.

No imports beyond the standard library, so a test or a demo step can use it without loading the stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


class WaitTimeout(AssertionError, TimeoutError):
    """A bounded wait that ran out: a failed assertion to pytest, a TimeoutError to the demo and the bench."""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy and return that; raise WaitTimeout after `timeout`
    seconds. `timeout` is a bound, not a pace: the wait ends as soon as the event is seen.

    Between two checks it waits `interval`, or as long as the last check took if that was longer: a costly
    check (a CLI command is a new interpreter, about 0.7 s of CPU) then polls at most half the time instead of
    all of it, and leaves the CPU to the work it waits for."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        began = time.monotonic()
        last = check()
        if last:
            return last
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(max(interval, min(now - began, deadline - now)))
    raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def crm_persons(keys: Iterable[int], profiles: list[int] | None = None) -> list[dict[str, Any]]:
    """Persons like a small CRM's, each decided by its key alone: about 1 in 7 not opened and 1 in 5 on the
    Robinson list (neither synced by the demo's conditions), languages and consent profiles mixed (CRM
    profiles 12, 13, 14) unless `profiles` is given."""
    return [
        {
            "K_CONTACT": key,
            "NAME": f"Person{key}",
            "FIRSTNAME": f"Seed{key}",
            "EMAIL1": f"person{key}@example.com",
            "MOBILE": f"+3247{key % 10_000_000:07d}",
            "LANGUAGE": "EN" if key % 2 else "FR",
            "OPENED": "0" if key % 7 == 0 else "1",
            "ROBINSON": "1" if key % 5 == 0 else "0",
            "profiles": list(profiles)
            if profiles is not None
            else [p for p, on in ((12, key % 2 == 1), (13, key % 3 == 0), (14, key % 4 == 0)) if on],
        }
        for key in keys
    ]
