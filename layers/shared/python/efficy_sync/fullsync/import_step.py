"""The `Imports` step of a full sync in import mode (collect.py says what it does and why), and the page's side
of it: where a page queues the keys of its persons an import can carry.

A run in diff mode, or a dry run, queues nothing and the step answers at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..settings import settings
from ..store.import_queue import ImportQueue, QueuedPage
from ..sync import PersonSyncer
from .breaker import Breaker
from .collect import Collector
from .runs import Run
from .tags import plan_query_tags

if TYPE_CHECKING:
    from ..clients.apsis import ApsisClient
    from .lifecycle import FullSync


def uses_collector(run: Run) -> bool:
    return run.write_mode == "import" and not run.dry_run


def page_queue(run: Run, page: int) -> Callable[[int, int, list[int]], None] | None:
    """sync_page's `queue`: (Efficy page number, Efficy page size, keys) -> one queue item; None in diff mode."""
    if not uses_collector(run):
        return None
    queue = ImportQueue(settings().state_table)

    def add(efficy_page: int, page_size: int, keys: list[int]) -> None:
        queue.add(run.integration_id, run.run_id, QueuedPage(page, efficy_page, page_size, tuple(sorted(keys))))

    return add


def queued_keys(run: Run) -> set[int]:
    """Every person key the run's pages queued for its imports (what a seam window leaves to them)."""
    entries = ImportQueue(settings().state_table).entries(run.integration_id, run.run_id)
    return {key for entry in entries for key in entry.keys}


def imports_step(
    full_sync: FullSync,
    run_payload: dict[str, Any],
    previous: dict[str, Any] | None = None,
    time_left: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """One call of the Imports step: `more: True` when it ran out of time; the state machine calls it again
    with this answer as `previous` and it goes on from the next file (files done are stored and counted once)."""
    previous = previous or {}
    run = full_sync.runs.get(str(run_payload["integration_id"]), str(run_payload["run_id"]))
    if run is None or not run.active or not uses_collector(run):
        return {"files": 0, "next": 0, "more": False}
    cfg = full_sync.run_config(run)  # held to the conditions of a version applied since (run_config.py)
    efficy = full_sync.efficy_for(cfg)
    # profile writes of the rows an import cannot carry share the account with nothing else now: the pages
    # are done, so this step may take the whole full-sync share
    apsis = full_sync._apsis(cfg, 1)  # the account's shared budget
    query_changes = plan_query_tags(cfg, efficy.run_query, full_sync.states, full_sync.members, run.run_id)
    # the blast-radius breaker: removals (opt-outs, deletes, untags) never ride in an import file while the
    # run holds them; those persons go one by one through the gate, untags are left to the (gated) Tags step
    breaker = Breaker.of(full_sync)
    gate = breaker.page_gate(run)

    def counted(token: str, counters: Any) -> bool:
        """False when `token` was counted before (a retried step): the collector then counts only new work."""
        return full_sync.runs.add_once(run.integration_id, run.run_id, token, {k: v for k, v in counters.items() if v})

    collector = Collector(
        cfg,
        efficy=efficy,
        apsis=apsis,
        states=full_sync.states,
        syncer=PersonSyncer(
            cfg,
            cast("ApsisClient", apsis),
            full_sync.states,
            dry_run=False,
            email_lookup=efficy.find_contacts_by_email,
            removal_gate=gate,
        ),
        hold_removals=gate is not None,
        import_rows=cfg.full_sync.import_rows,
        on_counters=counted,
        should_continue=full_sync._still_running(run.integration_id, run.run_id),
    )
    entries = ImportQueue(settings().state_table).entries(run.integration_id, run.run_id)
    done = collector.run(entries, query_changes, start=int(previous.get("next", 0)), time_left=time_left)
    breaker.remember(run, gate)
    return {**done, "calls": int(previous.get("calls", 0)) + 1}
