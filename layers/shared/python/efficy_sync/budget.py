"""One APSIS One request budget per account, shared by every worker that writes to it at once.

APSIS One allows 100 requests/s per account, whatever the number of API keys, and 10 requests/s on one profile
key (contracts/apsis-one.md section 5). The full-sync pages and the real-time workers of an integration run in
separate Lambdas, so a budget kept in one process cannot hold the account under its limit; a fixed share per
page (90 % / pages) left the share of a page of unchanged persons unused while another page waited.

The shared budget is a counter per 100 ms slot in DynamoDB (the state table, pk "BUDGET#<account>", sk
"SLOT#<slot number>"): one conditional UpdateItem takes N requests of the current slot at once, refused once
the slot's cap (90 % of the account rate x 0.1 s) would be passed. Slots are aligned to the epoch second, so
no calendar second ever holds more than ten slots' caps: 90 requests at 100/s. A worker spends what it took
only within that slot and drops the rest, so taken-but-late requests never spill into the next slot.
The in-process part is the fast path: the threads of one worker share what one UpdateItem took (it takes as
many as threads are waiting, up to `LEASE_MAX`), so a worker pays one DynamoDB write per few APSIS calls, and a
worker with nothing to send (a page of unchanged persons) takes nothing and leaves the whole cap to others.
Slot items expire through the table's TTL (`expires_at`).

`KeyLimit` keeps the per-profile-key limit in-process: one person's calls are made by one worker.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .clients.http import check_time
from .store.budget_slots import SLOT_TTL_SECONDS as SLOT_TTL_SECONDS  # the counters' items: store/budget_slots.py
from .store.budget_slots import BudgetSlots

#: APSIS One's documented account limit (requests/s); EFFICY_SYNC_APSIS_RATE overrides it (another account, a
#: benchmark), read when a budget is built
APSIS_ACCOUNT_RATE = 100.0
#: the share of the account this integration's workers may take together (headroom for clock skew and others)
ACCOUNT_SHARE = 0.9
#: documented limit of consecutive requests on one profile key
PROFILE_KEY_RATE = 10
SLOT_SECONDS = 0.1
#: at most this many requests taken by one UpdateItem (what is not spent within its slot is lost to others)
LEASE_MAX = 8
#: 10,000 requests/s: far above any APSIS account; a budget this large means pacing is off
UNLIMITED_PER_SLOT = 1000
#: no request is started in the last this-many seconds of its slot, so one that takes a while to leave this
#: process still reaches APSIS within the slot (and the calendar second) it was counted in
SPEND_MARGIN = 0.02


def account_rate() -> float:
    """The account's requests/s, from the environment at each call (a benchmark changes it between runs)."""
    return float(os.environ.get("EFFICY_SYNC_APSIS_RATE") or APSIS_ACCOUNT_RATE)


def account_key(base_url: str, client: str) -> str:
    """Names the APSIS account in the budget's key: the API base URL and the API client (one API client belongs
    to one account): its client id, as the token store names it (apsis_tokens.parameter_name). Keyed by the
    credentials secret's name, two integrations of one account (one Efficy feeding two sections, each with its
    own `efficy-sync/<id>/apsis` secret) had a budget each and together sent up to twice the cap. A hash, so
    no URL or client id is stored beside the counters."""
    return hashlib.sha256(f"{base_url.rstrip('/')}|{client}".encode()).hexdigest()[:20]


class SharedBudget:
    """Blocks each caller of `wait()` until one more APSIS request fits the account's shared cap."""

    def __init__(
        self,
        table: str,
        account: str,
        rate: float | None = None,
        *,
        share: float = ACCOUNT_SHARE,
        lease_max: int = LEASE_MAX,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._slots = BudgetSlots(table, account)
        self.slot_cap = max(1, math.floor((rate if rate is not None else account_rate()) * share * SLOT_SECONDS))
        self._lease_max = max(1, min(lease_max, self.slot_cap))
        #: a rate no APSIS account has (a benchmark timing the product itself): no counting at all
        self.unlimited = self.slot_cap >= UNLIMITED_PER_SLOT
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slot = -1
        self._left = 0
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        #: UpdateItems made and refused, for tests and benchmarks
        self.takes = 0
        self.refused = 0

    def wait(self) -> None:
        if self.unlimited:
            return
        with self._waiting_lock:
            self._waiting += 1
        try:
            with self._lock:
                while True:
                    # a full account budget must not outlast the invocation: OutOfTime (retried) before the
                    # hard timeout, which would lose the batch's report and what its persons already sent
                    check_time("APSIS request budget")
                    now = self._clock()
                    slot = int(now / SLOT_SECONDS)
                    if (slot + 1) * SLOT_SECONDS - now < SPEND_MARGIN:  # too late in the slot: the next one
                        self._sleep((slot + 1) * SLOT_SECONDS - now + 0.001)
                        continue
                    if slot == self._slot and self._left > 0:
                        self._left -= 1
                        return
                    taken = self._take(slot)
                    if taken:
                        self._slot, self._left = slot, taken - 1
                        return
                    # to just past the next slot's start (a float slot boundary may read as the old slot)
                    self._sleep(max(0.0, (slot + 1) * SLOT_SECONDS - self._clock()) + 0.001)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _take(self, slot: int) -> int:
        """Requests taken from `slot` in DynamoDB: as many as threads wait here (up to the lease), or what the
        slot has left when that is less (a refused update tells how much the slot has used); 0 when full."""
        with self._waiting_lock:
            want = max(1, min(self._lease_max, self._waiting))
        used = self._update(slot, want)
        if used is None:
            return want
        room = self.slot_cap - used
        if 0 < room < want and self._update(slot, room) is None:
            return room
        return 0

    def _update(self, slot: int, n: int) -> int | None:
        """None when `n` requests were taken; else what the slot had used already (the update was refused)."""
        self.takes += 1
        used = self._slots.take(slot, n, self.slot_cap, slot * SLOT_SECONDS)
        if used is not None:
            self.refused += 1
        return used


class KeyLimit:
    """At most `rate` calls in any second on one profile key, from this worker (APSIS's per-key limit)."""

    def __init__(
        self,
        rate: int = PROFILE_KEY_RATE,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._sent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> None:
        while True:
            with self._lock:
                now = self._clock()
                if len(self._sent) > 10_000:  # forget keys not used within the last second
                    self._sent = {k: d for k, d in self._sent.items() if d and now - d[-1] < 1.0}
                sent = self._sent.setdefault(key, deque())
                while sent and now - sent[0] >= 1.0:
                    sent.popleft()
                if len(sent) < self._rate:
                    sent.append(now)
                    return
                delay = 1.0 - (now - sent[0])
            self._sleep(delay)


def shared_budget(cfg: Any, table: str | None = None, client_id: str | None = None) -> SharedBudget:
    """The budget of the integration's APSIS account, kept per process (one per account, rate and table).
    `table`: where the counters live (default: the state table of the settings); `client_id`: the API client
    (the credentials secret's name stands in when it is not known)."""
    if table is None:
        from .settings import settings

        table = settings().state_table
    rate = account_rate()
    key = (account_key(cfg.apsis.base_url, client_id or cfg.apsis.credentials_secret), rate, table)
    with _budgets_lock:
        found = _budgets.get(key)
        if found is None:
            found = SharedBudget(table, key[0], rate)
            _budgets[key] = found
        return found


_budgets: dict[tuple[str, float, str], SharedBudget] = {}
_budgets_lock = threading.Lock()


#: the ApsisClient calls of one profile, which count against the budget: its writes, and the consent reads
#: made before a first opt-in (existing_optouts) and by the Tags step, one per person: unpaced, a page opting in
#: known profiles sent about two requests per budget unit, the account went over its limit (429s)
PACED_CALLS = frozenset(
    {
        "get_consents",
        "consents_if_profile",
        "create_profile",
        "patch_attributes",
        "create_with_attributes",
        "upsert_attributes",
        "set_consent",
        "patch_tags",
        "delete_profile",
    }
)


class PacedApsis:
    """An ApsisClient whose profile writes wait for the pace (anything with `wait()`: a SharedBudget, or an
    in-process fullsync.page.Pace) and for the profile key's own limit; everything else passes straight through.
    A call that takes two requests (create + patch) waits once: the budget's 10 % headroom absorbs it."""

    def __init__(self, apsis: Any, pace: Any, keys: KeyLimit | None = None) -> None:
        self._apsis = apsis
        self._pace = pace
        self._keys = keys or KeyLimit()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._apsis, name)
        if name not in PACED_CALLS:
            return attribute

        def paced_call(key: Any, *args: Any, **kwargs: Any) -> Any:
            self._keys.wait(str(key))
            self._pace.wait()
            return attribute(key, *args, **kwargs)

        return paced_call


def paced(cfg: Any, apsis: Any, table: str | None = None) -> PacedApsis:
    """`apsis` with its profile writes held to the account's shared budget and the per-key limit: what the
    real-time worker, the write-back and the full-sync pages of an integration send, together."""
    return PacedApsis(apsis, shared_budget(cfg, table, getattr(apsis, "client_id", None)))
