"""A full sync's input, as an admin or the CLI starts the execution with it, checked so that a failed
execution says what to fix: {"integration_id": "<id>", "dry_run": false} plus the CLI's "started_by" and the
admin's "allow_removals" (breaker.py) and "write_mode" (this run's, instead of the config's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from ..config.model import FullSyncSettings
from .breaker import read_allow_removals


class InvalidSyncInput(ValueError):
    """The execution's input is not {"integration_id": "<id>", "dry_run": false} (plus the CLI's "started_by");
    the message names what is wrong.

    An admin may start an execution by hand (console, `aws stepfunctions start-execution`): the failed execution
    must say what to fix, not show a KeyError."""


SYNC_INPUT_EXAMPLE = '{"integration_id": "acme-eu", "dry_run": false}'
_INPUT_KEYS = ("integration_id", "dry_run", "started_by", "allow_removals", "allow_removals_up_to", "write_mode")
#: the config's full_sync.write_mode values, which a run may also be started with
WRITE_MODES: tuple[str, ...] = get_args(FullSyncSettings.model_fields["write_mode"].annotation)
MAX_STARTED_BY = 512


@dataclass(frozen=True)
class SyncInput:
    integration_id: str
    dry_run: bool
    started_by: str | None  # what `efficy-sync full-sync start` records: the caller's AWS identity
    allow_removals: bool = False  # the admin confirmed removals the breaker would halt (breaker.py)
    #: this run's write mode (a big first load in import mode, say) without a new config version; None: the config's
    write_mode: str | None = None
    #: the admin confirmed up to this many removals of each kind (0: none; breaker.read_allow_removals)
    allow_removals_up_to: int = 0


def parse_sync_input(sync_input: Any) -> tuple[str, bool]:
    """(integration_id, dry_run) from a full-sync execution's input; InvalidSyncInput naming the problem."""
    parsed = read_sync_input(sync_input)
    return parsed.integration_id, parsed.dry_run


def read_sync_input(sync_input: Any) -> SyncInput:
    """The whole input, `started_by` included (set by the CLI; absent when an admin starts the execution
    directly, and then the run records the execution's name); InvalidSyncInput naming the problem."""
    if not isinstance(sync_input, dict):
        raise InvalidSyncInput(
            f"the full-sync input must be a JSON object like {SYNC_INPUT_EXAMPLE}, not {type(sync_input).__name__}"
        )
    problems = []
    unknown = [k for k in sync_input if k not in _INPUT_KEYS]
    integration_id = sync_input.get("integration_id")
    if not isinstance(integration_id, str) or not integration_id.strip():
        found = "missing" if integration_id is None else f"{integration_id!r} is not an integration id"
        hint = [f"{k!r} (did you mean 'integration_id'?)" for k in unknown if _looks_like(k, "integration_id")]
        problems.append(f"integration_id is {found}" + (f"; found {', '.join(hint)}" if hint else ""))
    dry_run = sync_input.get("dry_run", False)
    if not isinstance(dry_run, bool):
        problems.append(f"dry_run must be true or false, not {dry_run!r}")
    started_by = sync_input.get("started_by")
    if started_by is not None and (not isinstance(started_by, str) or len(started_by) > MAX_STARTED_BY):
        problems.append(f"started_by must be text of at most {MAX_STARTED_BY} characters")
    allow_removals, up_to, problem = read_allow_removals(sync_input)
    if problem:
        problems.append(problem)
    write_mode = sync_input.get("write_mode")
    if write_mode is not None and write_mode not in WRITE_MODES:
        problems.append(
            f"write_mode must be one of {', '.join(map(repr, WRITE_MODES))} (or absent), not {write_mode!r}"
        )
    others = [k for k in unknown if not _looks_like(k, "integration_id")]
    if others:
        problems.append(f"unknown key(s) {', '.join(map(repr, others))} (allowed: {', '.join(_INPUT_KEYS)})")
    if problems:
        raise InvalidSyncInput(f"invalid full-sync input: {'; '.join(problems)}. Expected {SYNC_INPUT_EXAMPLE}")
    return SyncInput(
        str(integration_id).strip(),
        bool(dry_run),
        started_by.strip() if started_by else None,
        allow_removals,
        write_mode,
        up_to,
    )


def _looks_like(key: str, wanted: str) -> bool:
    """integrationId, IntegrationID, integration-id ... for integration_id."""
    return key.replace("_", "").replace("-", "").lower() == wanted.replace("_", "").lower()
