"""How often the Lambdas' Python collects cyclic garbage: a larger young generation than CPython's default.

Why: a full-sync page allocates a great many short-lived containers (records, mapped persons, plans, pydantic
states, botocore requests and answers) while it holds a page's worth of live ones. With CPython's thresholds
(700, 10, 10) a first load of 10,000 persons ran 1,252 young, 114 middle and 9 full collections, 5.5 s of
pauses (the last two walk every live object, the imported modules' too; each pause holds the GIL, so every thread
of the page waits); with these thresholds it ran 33 to 45, 3 to 4 and 0 collections, 0.9 to 1.5 s (the
session notes; `make bench` prints the collections and pauses of each full-sync phase). A pause costs what
survives, not what was allocated, so fewer, larger young collections walk each survivor fewer times.

What it costs: cyclic garbage waits for up to 10,000 more allocations before it is freed (objects without
cycles are freed at once by reference counting, as before), a few megabytes at most; the memory tests of the
page, reconcile and tag paths measure with it on. Only the thresholds change: no collection is disabled and
nothing is frozen (a frozen heap never frees what becomes garbage later in a warm container).
"""

from __future__ import annotations

import gc

#: (young, middle, full): young objects before a young collection; young collections before a middle one;
#: middle collections before a full one (CPython's default is (700, 10, 10))
THRESHOLDS = (10_000, 10, 10)


def apply() -> None:
    """Sets THRESHOLDS, unless the process already collects less often (the local stack imports every handler
    into one process, and a host may have chosen its own)."""
    if gc.get_threshold()[0] < THRESHOLDS[0]:
        gc.set_threshold(*THRESHOLDS)
