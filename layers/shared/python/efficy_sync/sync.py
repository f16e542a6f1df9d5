"""Bringing one person in APSIS One in line with Efficy: map, diff against what we pushed, send, remember.

The worker of real-time sync and the page worker of full sync both end here, so both follow the same
rules (conditions, consent safety, smallest set of APSIS calls). Errors that retrying cannot fix are
recorded on the person (and shown by `explain` / `health`) instead of being retried for ever; transient
ones propagate so the queue or the state machine retries them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .clients.apsis import ApsisClient
from .clients.errors import ApiError, NotFound
from .config import IntegrationConfig
from .diff import (
    CreateProfile,
    DeleteProfile,
    PatchAttributes,
    PatchTags,
    SetConsent,
    apply_operations,
    plan_for_skip,
    plan_operations,
)
from .mapping import Skip, map_person
from .pii import hash_key
from .state import PersonState
from .store.persons import PersonStateStore, StaleWrite

Operation = CreateProfile | PatchAttributes | SetConsent | PatchTags | DeleteProfile


@dataclass
class Outcome:
    person_key: int
    result: str  # synced | unchanged | skipped | deleted | failed | stale | dry_run
    operations: list[Any] = field(default_factory=list)
    reason: str = ""
    error_category: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PersonSyncer:
    def __init__(
        self,
        cfg: IntegrationConfig,
        apsis: ApsisClient,
        states: PersonStateStore,
        *,
        dry_run: bool = False,
    ) -> None:
        self.cfg = cfg
        self.apsis = apsis
        self.states = states
        self.dry_run = dry_run

    def sync(
        self,
        key: int,
        person: dict[str, Any] | None,
        state: PersonState | None,
        *,
        query_tags: set[str] | None = None,
    ) -> Outcome:
        """`person` is Efficy's current record (None when Efficy no longer has it); `state` what we stored."""
        if person is None:
            return self._deleted(key, state)
        result = map_person(self.cfg, person, query_tags=query_tags)
        stamp = str(person.get("D_CHANGE", ""))
        if isinstance(result, Skip):
            ops = plan_for_skip(result, state, self.cfg.on_condition_lost)
            outcome = self._execute(key, ops)
            if outcome is not None:
                return self._failed(key, state, stamp, outcome, ops)
            new_state = self._skipped_state(key, state, stamp, result, ops)
            return self._store(Outcome(key, "skipped", ops, reason=result.reason), new_state)
        ops = plan_operations(result, state)
        failure = self._execute(key, ops)
        if failure is not None:
            return self._failed(key, state, stamp, failure, ops)
        new_state = apply_operations(state, result, ops)
        new_state = new_state.model_copy(
            update={
                "last_outcome": "synced",
                "error_category": None,
                "error_detail": None,
                "skip_reason": None,
                "updated_at": _now(),
            }
        )
        return self._store(Outcome(key, "synced" if ops else "unchanged", ops), new_state)

    # ---- APSIS calls -----------------------------------------------------------------------------------
    def _execute(self, key: int, ops: list[Operation]) -> ApiError | None:
        """Send the operations in order. Returns a non-retryable error; raises retryable ones."""
        if self.dry_run:
            return None
        try:
            for op in ops:
                self._send(op)
        except ApiError as exc:
            if exc.retryable:
                raise
            return exc
        return None

    def _send(self, op: Operation) -> None:
        apsis = self.apsis
        if isinstance(op, CreateProfile):
            apsis.create_profile(op.key)
        elif isinstance(op, PatchAttributes):
            try:
                apsis.patch_attributes(op.key, op.attributes)
            except NotFound:  # deleted in APSIS behind our back: create it again
                apsis.create_profile(op.key)
                apsis.patch_attributes(op.key, op.attributes)
        elif isinstance(op, SetConsent):
            apsis.set_consent(op.key, op.topic, op.channel, op.type)
        elif isinstance(op, PatchTags):
            apsis.patch_tags(op.key, op.tags)
        elif isinstance(op, DeleteProfile):
            apsis.delete_profile(op.key)
        else:  # pragma: no cover - a new operation type must be wired here
            raise TypeError(f"unknown operation {op!r}")

    # ---- outcomes --------------------------------------------------------------------------------------
    def _store(self, outcome: Outcome, state: PersonState) -> Outcome:
        if self.dry_run:
            outcome.result = "dry_run" if outcome.operations else outcome.result
            return outcome
        try:
            self.states.put(state)
        except StaleWrite:
            outcome.result = "stale"
        return outcome

    def _base_state(self, key: int, state: PersonState | None, stamp: str) -> PersonState:
        if state is not None:
            return state.model_copy(update={"change_stamp": stamp or state.change_stamp})
        return PersonState(integration_id=self.cfg.integration_id, person_key=str(key), change_stamp=stamp)

    def _skipped_state(
        self, key: int, state: PersonState | None, stamp: str, skip: Skip, ops: list[Operation]
    ) -> PersonState:
        base = self._base_state(key, state, stamp)
        update: dict[str, Any] = {
            "last_outcome": "skipped",
            "skip_reason": skip.reason,
            "error_category": None,
            "error_detail": None,
            "updated_at": _now(),
        }
        if any(isinstance(op, DeleteProfile) for op in ops):
            update.update(exists_in_apsis=False, attribute_hashes={}, consents={}, tags={})
        elif any(isinstance(op, PatchTags) for op in ops):
            update["tags"] = {tag: False for tag in base.tags}
        return base.model_copy(update=update)

    def _failed(
        self, key: int, state: PersonState | None, stamp: str, error: ApiError, ops: list[Operation]
    ) -> Outcome:
        base = state or PersonState(integration_id=self.cfg.integration_id, person_key=str(key), change_stamp="")
        failed = base.model_copy(
            update={
                "last_outcome": "failed",
                "error_category": error.category,
                "error_detail": f"{type(error).__name__}: {error}"[:500],
                "updated_at": _now(),
            }
        )
        # Keep the stored stamp: the change was not applied, so a retry of the same change must still pass.
        outcome = Outcome(key, "failed", ops, reason=str(error), error_category=error.category)
        if not self.dry_run:
            try:
                self.states.put(failed)
            except StaleWrite:
                outcome.result = "stale"
        return outcome

    def _deleted(self, key: int, state: PersonState | None) -> Outcome:
        """Efficy deleted the person: delete, untag or leave the APSIS profile (per integration), keep a tombstone."""
        mode = self.cfg.on_delete
        ops: list[Operation] = []
        known = state is not None and state.exists_in_apsis
        if known and mode == "delete":
            ops = [DeleteProfile(str(key))]
        elif known and mode == "untag" and state is not None:
            tags = {tag: False for tag, on in state.tags.items() if on}
            ops = [PatchTags(str(key), tags)] if tags else []
        failure = self._execute(key, ops)
        if failure is not None:
            return self._failed(key, state, state.change_stamp if state else "", failure, ops)
        base = self._base_state(key, state, state.change_stamp if state else "")
        update: dict[str, Any] = {"last_outcome": "deleted", "updated_at": _now()}
        if mode == "delete" and known:
            update.update(exists_in_apsis=False, attribute_hashes={}, consents={}, tags={})
        return self._store(
            Outcome(key, "deleted", ops, reason=f"deleted in Efficy (on_delete={mode})"), base.model_copy(update=update)
        )


def log_fields(outcome: Outcome) -> dict[str, Any]:
    """What a log line may say about a sync: the person as a hash, never e-mail or phone."""
    return {
        "person": hash_key(outcome.person_key),
        "result": outcome.result,
        "operations": [type(op).__name__ for op in outcome.operations],
        "error_category": outcome.error_category or None,
    }
