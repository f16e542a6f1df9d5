"""A person listed twice in one page of Efficy's records export (an export joined to a relation gives one row per
company; Efficy does not document one row per contact). Copies that agree are one person; copies that disagree
were both synced, and a person whose copies disagreed on their CRM profiles was opted out and in again at
alternate full syncs. The real EfficyClient against the Efficy simulator over HTTP, the page's answer given a
copy of one record as the connector would send it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.fullsync.page import sync_page
from efficy_sync.fullsync.report import build_report, render_report
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CFG, FAST, FIRSTNAME, person
from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_deadline_wiring import Context, load  # noqa: F401 (load: a fixture)

Records = Callable[[list[dict[str, Any]]], None]


class CopyingConnector(EfficyClient):
    """The real client, whose records pages are changed by `change` before it reads them."""

    change: Records | None = None

    def _rest_get(self, op: str, path: str, params: dict[str, Any] | None = None) -> Any:
        payload = super()._rest_get(op, path, params)
        if self.change is not None and path.endswith("/records/contacts") and payload["records"]:
            self.change(payload["records"])
        return payload


@pytest.fixture
def apsis_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApsisSimulator]:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    sim = ApsisSimulator(client_id="dup", client_secret="dup-secret", rate_limits=False).start()
    yield sim
    sim.stop()


@pytest.fixture
def efficy_sim() -> Iterator[EfficySimulator]:
    sim = EfficySimulator().start()
    sim.upsert_persons([person(k) for k in range(1, 6)])
    yield sim
    sim.stop()


def run(
    efficy_sim: EfficySimulator,
    apsis_sim: ApsisSimulator,
    store: Any,
    change: Records | None,
    *,
    pages: int = 1,
    page_size: int = 100,
) -> Any:
    apsis = ApsisClient(apsis_sim.url, "dup", "dup-secret", section=CFG.apsis.section, policy=FAST)
    with CopyingConnector(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        efficy.change = change
        descriptor = {"page": 0, "first": 0, "pages": pages, "page_size": page_size, "tail": False}
        return sync_page(CFG, descriptor, efficy=efficy, apsis=apsis, states=store, dry_run=False)


def profile(sim: ApsisSimulator, key: str) -> dict[str, Any]:
    return next(p for p in sim.profiles() if p["key"] == key)


def twice(**other: Any) -> Records:
    def change(records: list[dict[str, Any]]) -> None:
        records.insert(3, {**copy.deepcopy(records[2]), **other})

    return change


def test_copies_that_disagree_on_the_crm_profiles_do_not_flip_the_consent(efficy_sim, apsis_sim) -> None:
    store = MemoryPersonStateStore()
    run(efficy_sim, apsis_sim, store, None)
    seen = []
    for _ in range(4):
        result = run(efficy_sim, apsis_sim, store, twice(profiles=[], D_CHANGE="2030-01-01T00:00:00"))
        seen.append(profile(apsis_sim, "3")["consents"][0]["type"])
        assert result.counters["export_conflicting"] == 1 and result.persons == 4
    assert seen == ["opt-in"] * 4  # it alternated opt-out, opt-in, opt-out, opt-in
    report = build_report_for(result.counters)
    assert report["efficy_conflicting_records"] == 1
    assert any("more than once with different values" in line for line in render_report(report))


def test_copies_that_disagree_on_a_value_send_neither(efficy_sim, apsis_sim) -> None:
    result = run(efficy_sim, apsis_sim, MemoryPersonStateStore(), twice(FIRSTNAME="Other"))
    assert sorted(p["key"] for p in apsis_sim.profiles()) == ["1", "2", "4", "5"]
    assert result.counters["created"] == 4 and result.counters["export_conflicting"] == 1


def test_copies_that_agree_are_one_person(efficy_sim, apsis_sim) -> None:
    result = run(efficy_sim, apsis_sim, MemoryPersonStateStore(), twice())
    assert sorted(p["key"] for p in apsis_sim.profiles()) == ["1", "2", "3", "4", "5"]
    assert profile(apsis_sim, "3")["attributes"][FIRSTNAME] == "F3"
    assert result.persons == 5 and result.counters["created"] == 5 and not result.counters["export_conflicting"]
    assert not result.counters["export_unordered"]  # a copy is not a key out of order: no such warning


def build_report_for(counters: Any) -> dict[str, Any]:
    class Run:
        integration_id, run_id, dry_run, write_mode = CFG.integration_id, "r1", False, "diff"
        started_at, ended_at, pages_total, report = "2026-01-01T00:00:00Z", None, 1, None

    Run.counters = counters
    return build_report(Run(), status="succeeded")


def test_copies_cut_by_an_efficy_page_boundary_are_judged_together(efficy_sim, apsis_sim) -> None:
    """The page size cuts a person's rows (one per company) across two Efficy pages of one worker page: judged page
    by page, each copy was synced alone, and the person was opted out and in again in every run."""
    store = MemoryPersonStateStore()
    run(efficy_sim, apsis_sim, store, None, pages=2, page_size=3)
    first: dict[str, Any] = {}

    def change(records: list[dict[str, Any]]) -> None:
        if records[0]["K_CONTACT"] == 1:
            first["last"] = copy.deepcopy(records[-1])
        else:  # the next page opens with another row of the first page's last person
            records.insert(0, {**first["last"], "profiles": [], "D_CHANGE": "2030-01-01T00:00:00"})

    for _ in range(2):
        result = run(efficy_sim, apsis_sim, store, change, pages=2, page_size=3)
        assert profile(apsis_sim, "3")["consents"][0]["type"] == "opt-in"
        assert result.counters["export_conflicting"] == 1 and result.persons == 4 and result.efficy_pages == 2
        assert not result.counters["updated"]  # nothing sent either way


def test_the_page_worker_publishes_the_conflicting_persons_as_a_metric(
    efficy_sim, apsis_sim, load, monkeypatch, capsys
) -> None:
    """The report's efficy_conflicting_records is also the CloudWatch metric EfficyConflictingRecords, published
    by the page worker as it publishes PersonsSynced / Skipped / Failed: the page's own answer (the real page over
    HTTP) goes through the real handler and its EMF document."""
    result = run(efficy_sim, apsis_sim, MemoryPersonStateStore(), twice(FIRSTNAME="Other"))
    assert result.summary()["conflicting"] == 1
    app = load("sync_page")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setattr(app.full_sync, "page", lambda item: result.summary())
    capsys.readouterr()
    app.handler({"integration_id": "acme", "run_id": "r", "page": {"page": 0}}, Context(remaining_ms=300_000))
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    published = {m["Name"]: d[m["Name"]] for d in documents for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert published.get("EfficyConflictingRecords") in ([1.0], 1.0), published
    assert published.get("PersonsSynced") in ([4.0], 4.0), published
