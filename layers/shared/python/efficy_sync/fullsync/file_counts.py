"""What one import file adds to the run's counters, each person once across the Imports step's attempts.

The state machine calls the step again after an error (a per-person outage, the Lambda's time): the retry reads
the file's persons again and syncs whatever is still to do. The attempt that failed counted what it did before
the error went up (RunStore.add_once under the file's token), so a retry whose token was counted counts only
what was not. Which persons those are, the retry cannot ask; it follows from what each outcome leaves behind:
- nothing sent (unchanged, a skip with nothing to withdraw, removals the breaker held and nothing else): the
  retry finds the same. The file's census: counted with the file's token only, by the first attempt counted;
- sent and stored (created, updated, a skip that withdrew something): the retry finds the person unchanged.
  Counted by the attempt that did it; a retry's under a token of its own, named by its persons;
- a failure recorded for the person's own data (an APSIS 400): the stored state keeps the change to do, so the
  retry meets it again. Counted only by an attempt that completes the file, under a token named by the persons
  and their results: an attempt that fails leaves them to its retry (a run whose step fails for good does not
  count them), and a step run again after a lost reply, failing them again, counts them once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..safety import removal_counts
from ..sync import Outcome
from .report import tally

#: a file's own counters counted by its first attempt only (the progress bar's files done and their time)
FILE_CENSUS = ("import_files_done", "import_file_ms")

OnCounters = Callable[[str, Counter[str]], bool | None]


def digest(keys: Iterable[Any]) -> str:
    return hashlib.sha256(",".join(str(key) for key in keys).encode()).hexdigest()[:16]


class FileCounts:
    """One attempt's counters of one file: the import's own, and each person's kept apart by what a retry would
    find of them (module docstring). Filled by one thread (the file's)."""

    def __init__(self) -> None:
        self.file: Counter[str] = Counter()
        self._census: Counter[str] = Counter()
        self._done: Counter[str] = Counter()
        self._repeats: Counter[str] = Counter()
        self._done_names: list[str] = []
        self._repeat_names: list[str] = []

    def person(self, outcome: Outcome, skip_reason: str | None = None) -> None:
        """One person's outcome, once they finished (a sync that raised is left to the retry)."""
        counts = tally(outcome, skip_reason=skip_reason)
        counts.update(removal_counts(outcome.removals))
        name = f"{outcome.person_key}:{outcome.result}"
        if outcome.result == "failed" or outcome.error_category:  # recorded; the stored state keeps the change
            self._repeats.update(counts)
            self._repeat_names.append(name)
        elif outcome.operations:
            self._done.update(counts)
            self._done_names.append(name)
        else:
            self._census.update(counts)

    def report(self, on_counters: OnCounters, token: str, *, complete: bool) -> None:
        """Adds this attempt's counters to the run's: all of them under `token` unless an attempt before counted
        it (add_once answers False), then only what this one sent; the repeated failures once `complete`."""
        first = self.file + self._census + self._done
        if on_counters(token, first) is False:
            work = Counter({name: n for name, n in self.file.items() if name not in FILE_CENSUS}) + self._done
            if work:
                names = sorted(self._done_names) + sorted(f"{k}={v}" for k, v in work.items())
                on_counters(f"{token}-again-{digest(names)}", work)
        if complete and self._repeats:
            on_counters(f"{token}-repeats-{digest(sorted(self._repeat_names))}", self._repeats)
