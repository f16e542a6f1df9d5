"""What the domain asks of the store: small Protocols the type checker holds every store to, so an in-memory
store (tests), a counting wrapper or a wrong one is checked against the same methods as the DynamoDB ones.

The domain types its constructor parameters with these (ParkingLot, Collector, mirror_query_tags, ...), never
with a DynamoDB class; the implementations are in this package (persons.py, runs.py, parking.py,
query_members.py, configs.py) and the conformance checks at the end run under the type checker only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import IntegrationConfig
    from ..consent import OptOutRecord
    from ..state import PersonState
    from .parking import Parked
    from .person_items import HealthKind
    from .run_records import Lock, PageRecord, Run


class PersonStates(Protocol):
    """Per-person sync state and the APSIS opt-outs beside it (store/persons.py explains the contract)."""

    def get(self, integration_id: str, person_key: int | str) -> PersonState | None: ...

    def get_many(self, integration_id: str, keys: Iterable[int | str]) -> dict[int, PersonState]: ...

    def put(self, state: PersonState) -> None: ...

    def announce(self, state: PersonState) -> None: ...

    def withdraw(self, state: PersonState) -> None: ...

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]: ...

    def announce_many(self, states: list[PersonState]) -> list[PersonState]: ...

    def record_optout(self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord) -> bool: ...

    def update_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool: ...

    def retire_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool: ...

    def scan(self, integration_id: str) -> list[PersonState]: ...

    def keys_in_apsis(self, integration_id: str) -> Iterator[int]: ...

    def issues(self, integration_id: str, kinds: Iterable[HealthKind] = ("failure",)) -> list[PersonState]: ...

    def reindex(self, integration_id: str) -> int: ...


class Runs(Protocol):
    """Full-sync runs: the integration's lock, the run and its counters, page records (store/runs.py)."""

    def begin(
        self,
        integration_id: str,
        execution_arn: str,
        *,
        dry_run: bool,
        config_version: int,
        write_mode: str,
        max_concurrency: int,
        holder_status: Callable[[str], str | None],
        end_stale: Callable[[Lock, str | None], object],
        started_by: str = "",
        started_via: str = "",
    ) -> Run: ...

    def lock(self, integration_id: str) -> Lock | None: ...

    def locks(self) -> list[Lock]: ...

    def release(self, integration_id: str, execution_arn: str) -> bool: ...

    def get(self, integration_id: str, run_id: str) -> Run | None: ...

    def latest(self, integration_id: str) -> Run | None: ...

    def history(self, integration_id: str, limit: int | None = None) -> list[Run]: ...

    def set_plan(
        self, run: Run, *, pages_total: int, persons_estimate: int, plan_key: str, last_key: int | None = None
    ) -> None: ...

    def add(self, integration_id: str, run_id: str, counters: Mapping[str, int]) -> None: ...

    def add_once(self, integration_id: str, run_id: str, token: str, counters: Mapping[str, int]) -> bool: ...

    def page_done(
        self, integration_id: str, run_id: str, page: int, persons: int, counters: Mapping[str, int]
    ) -> bool: ...

    def is_active(self, integration_id: str, run_id: str) -> bool: ...

    def page_stopped(
        self, integration_id: str, run_id: str, page: int, persons: int, counters: Mapping[str, int]
    ) -> bool: ...

    def page_failed(self, integration_id: str, run_id: str, page: int, error: str) -> None: ...

    def pages(self, integration_id: str, run_id: str) -> dict[int, PageRecord]: ...

    def end(
        self,
        integration_id: str,
        run_id: str,
        status: str,
        *,
        error: Mapping[str, Any] | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> bool: ...


class Parking(Protocol):
    """Real-time changes parked while their integration's full sync runs (store/parking.py)."""

    def try_park(self, integration_id: str, person_key: int, run_id: str, *, deleted: bool = False) -> bool | str: ...

    def items(self, integration_id: str, limit: int | None = None) -> Iterator[Parked]: ...

    def count(self, integration_id: str) -> int: ...

    def forget(self, integration_id: str, parked: Parked) -> bool: ...


class QueryMembers(Protocol):
    """The last known members of each mapped Efficy query (store/query_members.py)."""

    def get(self, integration_id: str, query: int) -> set[int] | None: ...

    def previous(self, integration_id: str, query: int, tag: str) -> set[int] | None: ...

    def put(
        self,
        integration_id: str,
        query: int,
        members: set[int],
        *,
        run_id: str,
        tags: Iterable[str] = (),
        widened: bool = False,
    ) -> None: ...

    def last_run(self, integration_id: str, query: int) -> str | None: ...

    def resume_key(self, integration_id: str, query: int) -> tuple[int | None, str]: ...

    def set_resume_key(self, integration_id: str, query: int, after: int, *, snapshot: str) -> bool: ...


class Configs(Protocol):
    """Integration configs with their history (store/configs.py)."""

    def current(self, integration_id: str) -> tuple[IntegrationConfig, int]: ...

    def get(self, integration_id: str) -> IntegrationConfig: ...

    def put(
        self, cfg: IntegrationConfig, *, applied_by: str, comment: str = "", expected_version: int | None = None
    ) -> int: ...

    def history(self, integration_id: str) -> list[dict[str, Any]]: ...

    def version(self, integration_id: str, version: int) -> IntegrationConfig: ...

    def list_ids(self) -> list[str]: ...

    def scheduled(self) -> dict[str, Callable[[], IntegrationConfig]]: ...


if TYPE_CHECKING:  # the DynamoDB stores keep to the Protocols (checked by mypy, never run)
    from .configs import ConfigStore
    from .parking import ParkedKeys
    from .persons import PersonStateStore
    from .query_members import QueryMembersStore
    from .runs import RunStore

    def _conforms(
        states: PersonStateStore, runs: RunStore, parked: ParkedKeys, members: QueryMembersStore, configs: ConfigStore
    ) -> tuple[PersonStates, Runs, Parking, QueryMembers, Configs]:
        return states, runs, parked, members, configs
