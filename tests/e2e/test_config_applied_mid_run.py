"""A config applied while persons are being synced: a sync condition it adds holds at once. Persons it excludes
are not created in APSIS One, neither by the real-time worker (which read the config once a minute) nor by a
running full sync (which keeps the version it started with, and created them for the rest of the run). A consent
mapping it removes decides nobody's consent any more, though the running full sync keeps its own mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_full_sync import crm_factory, population, start  # noqa: F401
from tests.support import APSIS_CREATES, Stack, start_stack, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(400)]

ENGLISH_ONLY = {"field": "LANGUAGE", "equals": "EN"}


def apply_condition(crm: Any, tmp_path: Path) -> Any:
    return apply_change(crm, tmp_path, lambda data: data["sync_conditions"].append(ENGLISH_ONLY))


def apply_change(crm: Any, tmp_path: Path, change: Any) -> Any:
    path = tmp_path / f"{crm.integration_id}.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    changed = tmp_path / f"{crm.integration_id}-v2.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    return crm.stack.cli("config", "apply", str(changed), "--by", "tester", check=True)


def sync_across_an_apply(crm_factory: Any, tmp_path: Path, change: Any) -> tuple[Any, Any, Any, set[str], Any]:
    """A full sync of 200 persons with `change` applied after its first page: (the CRM, the run, the apply's CLI
    result, the profiles APSIS held once the page in flight at the apply was done, the ended run)."""
    crm = crm_factory(page_size=20, max_concurrency=1)
    crm.seed(population(200))
    crm.apsis.add_fault(path_regex=APSIS_CREATES, delay_ms=100)  # a run long enough to apply a config during it
    start(crm)
    run = crm.running_run()
    wait_for("the first page written", lambda: crm.page_done(run.run_id, 0), timeout=120)
    applied = apply_change(crm, tmp_path, change)
    # the page syncing at the apply finishes with the config it read; every page after it reads the new one
    in_flight = next(n for n in range(10) if not crm.page_done(run.run_id, n))
    wait_for("the page in flight at the apply", lambda: crm.page_done(run.run_id, in_flight), timeout=120)
    assert crm.run().active, "the run ended with the page in flight: the test proves nothing"
    before = set(crm.profiles())
    ended = crm.ended_run(timeout=300)
    assert ended.status == "succeeded", ended.report
    return crm, run, applied, before, ended


def test_a_condition_applied_during_a_full_sync_holds_from_its_next_page(crm_factory: Any, tmp_path: Path) -> None:
    crm, run, applied, before, ended = sync_across_an_apply(
        crm_factory, tmp_path, lambda data: data["sync_conditions"].append(ENGLISH_ONLY)
    )
    assert f"A full sync of {crm.integration_id} is running (run {run.run_id}" in applied.stdout
    assert ended.config_version == run.config_version  # the run kept its version (its mappings)
    created = [k for k in crm.profiles() if k not in before]
    assert created, "nothing was created after the apply: the test proves nothing"
    excluded = [k for k in created if crm.persons[int(k)]["LANGUAGE"] != "EN"]
    assert not excluded, f"{len(excluded)} person(s) the applied condition excludes were created after it"


def test_a_consent_mapping_removed_during_a_full_sync_opts_nobody_in_from_its_next_page(
    crm_factory: Any, tmp_path: Path
) -> None:
    removed: dict[str, Any] = {}

    def drop_newsletter(data: dict[str, Any]) -> None:
        removed.update(data["consent_mappings"].pop(0))  # the admin found it maps the wrong CRM profile

    crm, _run, _applied, before, _ended = sync_across_an_apply(crm_factory, tmp_path, drop_newsletter)
    profiles = crm.profiles()
    created = [k for k in profiles if k not in before]
    members = [k for k in created if removed["crm_profile"] in crm.persons[int(k)]["profiles"]]
    assert members, "no member of the removed mapping's CRM profile was created after the apply: proves nothing"
    opted_in = [
        k
        for k in members
        if any(c["topic"] == removed["subscription"] and c["type"] == "opt-in" for c in profiles[k]["consents"])
    ]
    assert not opted_in, f"{len(opted_in)} person(s) opted in from a mapping removed during the run"
    others = [c["topic"] for k in created for c in profiles[k]["consents"] if c["topic"] != removed["subscription"]]
    assert others, "the mappings still in place sent nothing after the apply"


@pytest.fixture(scope="module")
def deployed_cache_stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A stack with the functions' deployed cache setting (settings.cache_seconds, 60 s; the local stack sets
    2 s, which hid a config served a minute after `config apply`)."""
    running = start_stack(tmp_path_factory.mktemp("deployed-cache"), env={"EFFICY_SYNC_CACHE_SECONDS": "60"})
    yield running
    running.stop()


@pytest.mark.xdist_group("stack-deployed-cache")
def test_the_real_time_worker_holds_to_a_condition_as_soon_as_it_is_applied(
    deployed_cache_stack: Stack, tmp_path: Path
) -> None:
    from tests.e2e.test_full_sync import make_crm

    crm = make_crm(deployed_cache_stack, tmp_path)
    try:
        crm.seed(population(4))
        crm.edit(1, FIRSTNAME="Warm")  # the worker has now read the config
        wait_for("the first change applied", lambda: crm.firstname(1) == "Warm", timeout=60)
        apply_condition(crm, tmp_path)

        new = 1003  # opened, not Robinson, French: fails only the condition just applied
        person = {**population(1, new)[0], "LANGUAGE": "FR"}
        crm.efficy.upsert_persons([person])
        crm.persons[new] = person
        crm.edit(new, FIRSTNAME="AfterApply")
        crm.edit(1, FIRSTNAME="AfterApply")  # an English person's change, after the French one's on the queue
        wait_for("the later change applied", lambda: crm.firstname(1) == "AfterApply", timeout=60)
        assert crm.profiles().get(str(new)) is None, "created in APSIS One though it fails the applied condition"
    finally:
        crm.efficy.stop()
        crm.apsis.stop()
