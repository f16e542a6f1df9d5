"""Full-sync runs: the lock, the run with its counters, page records. Their items and the store that reads and
writes them live in `store/runs.py` (all DynamoDB access is under store/); the names are re-exported here, where
the full sync's modules and tools have always found them."""

from __future__ import annotations

from ..store.run_records import ACTIVE as ACTIVE
from ..store.run_records import ENDED_STATUSES as ENDED_STATUSES
from ..store.run_records import RUN_HISTORY_MAX as RUN_HISTORY_MAX
from ..store.run_records import RUN_RETENTION_DAYS as RUN_RETENTION_DAYS
from ..store.run_records import STARTED_VIA_CLI as STARTED_VIA_CLI
from ..store.run_records import STARTED_VIA_STEPFUNCTIONS as STARTED_VIA_STEPFUNCTIONS
from ..store.run_records import STATUS_BY_EXECUTION as STATUS_BY_EXECUTION
from ..store.run_records import TTL_ATTRIBUTE as TTL_ATTRIBUTE
from ..store.run_records import Lock as Lock
from ..store.run_records import PageRecord as PageRecord
from ..store.run_records import Run as Run
from ..store.run_records import SyncAlreadyRunning as SyncAlreadyRunning
from ..store.run_records import expires_at as expires_at
from ..store.run_records import new_run_id as new_run_id
from ..store.run_records import utc_now as utc_now
from ..store.runs import RunStore as RunStore
