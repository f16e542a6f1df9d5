"""A reconcile run over real HTTP (both simulators, the real clients): Efficy paged, APSIS One exported once,
deleted persons proved gone before they count, and `--all` resumed from its cursor with the same result as an
uninterrupted run. The state table is the in-memory store with the same contract (no AWS needed here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import InScope, Reconciler, Scope, export_profiles, fix
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
FIRSTNAME = "com.apsis1.attributes.firstname"
CFG = config_from_dict(
    {
        "integration_id": "drift",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/e",
            "webhook_secret_secret": "x/w",
            "page_size": 10,
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "field_mappings": [{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}],
        "on_delete": "delete",
    }
)
EXPORT = "POST /audience/profiles/exports"


class MemoryCursors:
    """The CursorStore contract in memory."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def load(self, integration_id: str) -> dict[str, Any] | None:
        return self.items.get(integration_id)

    def save(self, integration_id: str, cursor: dict[str, Any]) -> None:
        self.items[integration_id] = cursor

    def clear(self, integration_id: str) -> None:
        self.items.pop(integration_id, None)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    efficy_sim = EfficySimulator().start()
    apsis_sim = ApsisSimulator(client_id="drift", client_secret="drift-secret", rate_limits=False).start()
    efficy_sim.upsert_persons(
        [
            {"K_CONTACT": k, "NAME": f"N{k}", "FIRSTNAME": f"F{k}", "EMAIL1": f"d{k}@example.com", "profiles": []}
            for k in range(1, 31)
        ]
    )
    apsis = ApsisClient(apsis_sim.url, "drift", "drift-secret", section=CFG.apsis.section, policy=FAST)
    states = MemoryPersonStateStore()
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        syncer = PersonSyncer(CFG, apsis, states, email_lookup=lambda _: [])
        for key, person in efficy.get_persons(range(1, 31), needed_fields(CFG)).items():
            syncer.sync(key, person, None)
        # the drift: two persons deleted and one created in Efficy without a webhook, one value edited in APSIS
        efficy_sim.delete_person(5)
        efficy_sim.delete_person(25)
        efficy_sim.upsert_persons([{"K_CONTACT": 31, "NAME": "N31", "EMAIL1": "d31@example.com", "profiles": []}])
        apsis.patch_attributes("15", {FIRSTNAME: "edited"})
        yield {"efficy_sim": efficy_sim, "apsis_sim": apsis_sim, "efficy": efficy, "apsis": apsis, "states": states}
    efficy_sim.stop()
    apsis_sim.stop()


def reconciler(world: dict[str, Any], cursors: MemoryCursors | None = None) -> Reconciler:
    return Reconciler(CFG, world["efficy"], world["apsis"], world["states"], cursors=cursors)


def test_all_finds_the_drift_with_one_export(world: dict[str, Any]) -> None:
    result = reconciler(world).run(Scope())
    report = result.report
    assert report.counts == {"missing": 1, "orphaned": 2, "attributes": 1, "consents": 0, "tags": 0}
    assert sorted(e["person_key"] for e in report.examples["orphaned"]) == ["25", "5"]
    assert report.persons_checked == 31  # 29 listed + the 2 Efficy proved gone
    assert result.profiles_exported == 30
    assert world["apsis_sim"].calls()[EXPORT] == 1


def test_a_sample_judges_only_the_keys_it_read(world: dict[str, Any]) -> None:
    report = reconciler(world).run(Scope(sample=12)).report
    # keys 1..12 judged (5 is gone: proved by two reads); 25 lies beyond the sample and is not judged
    assert report.counts["orphaned"] == 1 and report.examples["orphaned"][0]["person_key"] == "5"
    assert report.counts["missing"] == 0 and report.persons_checked == 12


def test_a_run_holds_only_the_exported_profiles_in_its_scope(world: dict[str, Any]) -> None:
    """The export holds every profile of the APSIS account, and the drift check held them all (out of memory on a
    large account): a run keeps only ours in its scope, and counts the others of ours for the empty-export check."""
    world["apsis"].create_profile("007")  # not K_CONTACT as we write it: not ours
    wanted = InScope(Scope(from_key=10, to_key=12))
    _, profiles = export_profiles(CFG, world["apsis"], with_queries=False, keep=wanted)
    assert sorted(profiles) == ["10", "11", "12"] and wanted.ours == 30
    assert profiles["11"].attributes[FIRSTNAME] == "F11"
    result = reconciler(world).run(Scope(from_key=10, to_key=12))
    assert result.profiles_exported == 3 and result.report.persons_checked == 3


def test_an_interrupted_all_resumes_from_its_cursor(world: dict[str, Any]) -> None:
    cursors = MemoryCursors()

    def stop_after_two(page: int, _checked: int) -> None:
        if page == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconciler(world, cursors).run(Scope(), on_page=stop_after_two)
    saved = cursors.load("drift")
    assert saved is not None and saved["page"] == 2 and saved["last_key"] == 21

    resumed = reconciler(world, cursors).run(Scope())

    assert resumed.resumed
    assert world["apsis_sim"].calls()[EXPORT] == 1  # the saved export was downloaded again, not requested
    assert cursors.load("drift") is None  # done: the cursor is gone
    fresh = reconciler(world).run(Scope())
    assert resumed.report.to_dict() == fresh.report.to_dict()
    assert reconciler(world, MemoryCursors()).run(Scope(from_key=20), resume=True).report.counts["orphaned"] == 1


@pytest.mark.parametrize("status", [404, 403])
def test_without_the_export_it_says_so_and_reconciles_from_the_keys_we_know(world: dict[str, Any], status: int) -> None:
    world["apsis_sim"].add_fault(path_regex="^/audience/profiles/exports$", method="POST", status=status, count=5)

    result = reconciler(world).run(Scope())

    assert any(f"refused the profile export ({status})" in text for text in result.limitations)
    counts = result.report.counts
    # deletes found from the state table's keys, the new person by a per-profile read; values cannot be read
    assert (counts["missing"], counts["orphaned"], counts["attributes"]) == (1, 2, 0)
    assert (
        world["apsis_sim"].calls()["GET /v2/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/consents"]
        == 31
    )


def test_a_resumed_fix_says_which_drift_it_could_not_repair(world: dict[str, Any]) -> None:
    """`--all --fix` interrupted, then run again: the run goes on from its cursor and counts the earlier pages'
    drift, but holds only its own pages' persons. Those earlier ones were neither repaired nor reported."""
    cursors = MemoryCursors()

    def stop_after_two(page: int, _checked: int) -> None:
        if page == 2:
            raise KeyboardInterrupt  # Ctrl-C, a lost session, a CLI timeout

    with pytest.raises(KeyboardInterrupt):
        reconciler(world, cursors).run(Scope(), on_page=stop_after_two)
    resumed = reconciler(world, cursors).run(Scope())
    queued: list[Any] = []
    fixed = fix(reconciler(world).cfg, resumed, world["states"], queued.extend)

    assert resumed.resumed and 0 < fixed["enqueued"] < resumed.report.persons_drifting
    assert fixed["not_fixed"]["earlier_pages"] == resumed.report.persons_drifting - fixed["enqueued"]


def test_a_sample_past_the_end_of_the_export_judges_the_profiles_left(world: dict[str, Any]) -> None:
    """The scheduled check runs a sample: orphans past the last person Efficy lists (deleted without a webhook),
    or every profile when the export answered empty, were never judged and it reported no drift."""
    world["efficy_sim"].delete_person(30)
    report = reconciler(world).run(Scope(sample=50, from_key=20)).report
    assert sorted(e["person_key"] for e in report.examples["orphaned"]) == ["25", "30"]
    assert report.persons_checked == 12  # 20..29 and 31 listed (25 proved gone), 30 proved gone

    class EmptyExport:  # an export answering an empty page (a wrong customer alias, a proxy)
        def __getattr__(self, name: str) -> Any:
            return getattr(world["efficy"], name)

        def list_persons_page(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return []

    empty = Reconciler(CFG, EmptyExport(), world["apsis"], world["states"]).run(Scope(sample=5, from_key=20))
    # five profiles judged by key: those Efficy still has are compared, the gone ones proved gone
    assert empty.report.persons_checked == 5
    assert [e["person_key"] for e in empty.report.examples["orphaned"]] == []  # 20..24 all exist
