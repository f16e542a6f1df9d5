"""The cleanup Lambda's sweep mirrors query tags that have a schedule of their own (fullsync/sweep.py): a mirror
that runs out of time must be resumed by the next sweep, and the sweep's Lambda must have more time than the
mirror keeps back. Against the APSIS simulator over HTTP and moto's DynamoDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import efficy_sync.fullsync.tags as tags_module
import pytest
from cfnlint.decode import cfn_yaml
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.config import QueryTag, load_config_file
from efficy_sync.fullsync.sweep import scheduled_query_tags
from efficy_sync.fullsync.tags import TAG_RESERVE_SECONDS, QueryMembers
from efficy_sync.state import PersonState
from efficy_sync.store.persons import PersonStateStore
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.support import create_pk_sk_table

ROOT = Path(__file__).resolve().parents[2]
TABLE = "state"
MEMBERS = list(range(1, 21))
BASE = load_config_file(ROOT / "examples" / "demo.yaml")
CFG = BASE.model_copy(
    update={"tags": BASE.tags.model_copy(update={"queries": [QueryTag(query=3618, tag="vip", schedule="rate(1 day)")]})}
)


def cleanup_timeout() -> float:
    template = json.loads(json.dumps(cfn_yaml.load(str(ROOT / "template.yaml"))))
    props = template["Resources"]["CleanupFunction"]["Properties"]
    return float(props.get("Timeout", template["Globals"]["Function"]["Timeout"]))


def test_the_sweep_lambda_has_more_time_than_the_tag_mirror_keeps_back() -> None:
    """mirror_query_tags stops once time_left() < TAG_RESERVE_SECONDS ("before the Lambda's timeout"): in a Lambda
    whose whole timeout is below that reserve, every sweep stops after its first batch."""
    assert cleanup_timeout() > TAG_RESERVE_SECONDS, (
        f"CleanupFunction Timeout {cleanup_timeout():.0f}s <= TAG_RESERVE_SECONDS {TAG_RESERVE_SECONDS:.0f}s"
    )


def synced_state(key: int) -> PersonState:
    """A person the sync keeps in APSIS One, as their stored state says."""
    return PersonState(
        integration_id="demo",
        person_key=str(key),
        exists_in_apsis=True,
        last_outcome="synced",
        change_stamp="2026-01-01T00:00:00",
    )


@pytest.fixture
def world(in_process_aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    # batches of 2 x 8 workers = 16 persons instead of 200, so that 20 newcomers need two batches
    monkeypatch.setattr(tags_module, "TAG_BATCH_PER_WORKER", 2)
    sim = ApsisSimulator(client_id="sweep-test", client_secret="sweep-test-secret", rate_limits=False).start()
    apsis = ApsisClient(sim.url, "sweep-test", "sweep-test-secret", section="com.apsis1.sections.default")
    create_pk_sk_table(TABLE)
    states = PersonStateStore(TABLE)
    for key in MEMBERS:
        apsis.create_profile(str(key))
        states.put(synced_state(key))
    full_sync = SimpleNamespace(
        configs=SimpleNamespace(scheduled=lambda: {"demo": lambda: CFG}),
        members=QueryMembers(TABLE),
        runs=SimpleNamespace(lock=lambda integration_id: None),
        efficy_for=lambda cfg: SimpleNamespace(run_query=lambda query: MEMBERS),
        _apsis=lambda cfg, workers: apsis,
        states=states,
        held=None,
        removal_breaker=None,
    )
    yield {"sim": sim, "full_sync": full_sync}
    sim.stop()


def tagged(world: dict[str, Any]) -> set[int]:
    return {int(p["key"]) for p in world["sim"].profiles() if "vip" in p["tags"]}


def test_a_scheduled_mirror_that_ran_out_of_time_is_resumed_by_the_next_sweep(world: dict[str, Any]) -> None:
    """sweep.py: "A mirror that runs out of time is resumed by the next sweep: its snapshot, and so its last run,
    is written only once it completes." The first sweep's time runs out after one batch (as it always does in
    the 30 s CleanupFunction); the sweep five minutes later must tag the rest, not wait for the next day."""
    running_out = lambda: TAG_RESERVE_SECONDS - 1  # noqa: E731
    first = scheduled_query_tags(world["full_sync"], datetime.now(UTC), time_left=running_out)
    assert first["demo"]["more"] is True and len(tagged(world)) == 16

    later = datetime.now(UTC) + timedelta(minutes=5)  # the next sweep (rate(5 minutes))
    second = scheduled_query_tags(world["full_sync"], later, time_left=lambda: 600.0)
    assert "demo" in second, "the unfinished mirror was not resumed: widen_snapshot moved the query's last run"
    assert tagged(world) == set(MEMBERS)
