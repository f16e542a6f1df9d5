"""`config validate --online` compares the CRM profiles Efficy's records export lists with those its per-person
read shows through `efficy.profile_detail` (assumed "Prof"). Against the Efficy simulator over HTTP, both for a
server that refuses a detail it does not know and for one that answers it empty (which would read everyone as
out of every profile, so opted out)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync_tools.commands._detail_check import profile_detail_problems
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.support import ROOT

#: one worker for the module: its module-scoped fixture is costly, and `--dist loadgroup` spread its tests
pytestmark = pytest.mark.xdist_group("profile_detail_check")

FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)


@pytest.fixture(scope="module")
def sim() -> Iterator[EfficySimulator]:
    simulator = EfficySimulator().start()
    simulator.upsert_persons(
        [
            {"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"p{k}@example.com", "profiles": [12] if k % 2 else []}
            for k in range(1, 9)
        ]
    )
    yield simulator
    simulator.stop()


def config(detail: str, **changes: Any) -> Any:
    raw = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    raw["efficy"]["profile_detail"] = detail
    return config_from_dict({**raw, **changes})


def check(sim: EfficySimulator, cfg: Any, unknown_detail: str = "error") -> tuple[list[Any], list[str]]:
    sim.unknown_detail = unknown_detail
    try:
        with EfficyClient(sim.url, "efficy-test-key", policy=FAST, profile_detail=cfg.efficy.profile_detail) as efficy:
            return profile_detail_problems(efficy, cfg)
    finally:
        sim.unknown_detail = "error"


def test_the_detail_this_server_has_passes(sim: EfficySimulator) -> None:
    assert check(sim, config("Prof")) == ([], [])
    assert check(sim, config("prof"), "empty") == ([], [])  # names compared as the server does


@pytest.mark.parametrize("unknown_detail", ["empty", "error"])
def test_a_detail_this_server_does_not_have_is_a_problem(sim: EfficySimulator, unknown_detail: str) -> None:
    problems, notes = check(sim, config("Profiles"), unknown_detail)
    assert [p.path for p in problems] == ["efficy.profile_detail"] and notes == []
    assert "'Profiles'" in problems[0].message
    if unknown_detail == "empty":
        assert "opted out" in problems[0].message


def test_nothing_to_compare_is_a_note_not_a_verdict(sim: EfficySimulator) -> None:
    assert check(sim, config("Profiles", consent_mappings=[], tags={"profiles": [], "queries": []}), "empty") == (
        [],
        [],
    )  # no mapping reads CRM profiles: nothing to check
    sim.upsert_persons([{"K_CONTACT": k, "profiles": []} for k in range(1, 9)])
    try:
        problems, notes = check(sim, config("Profiles"), "empty")
        assert problems == [] and len(notes) == 1 and "not checked" in notes[0]
    finally:
        sim.upsert_persons([{"K_CONTACT": k, "profiles": [12] if k % 2 else []} for k in range(1, 9)])


def test_profile_rows_with_a_status_nobody_configured_are_a_problem(sim: EfficySimulator) -> None:
    """The client as `config validate --online` builds it (from the config: its efficy.profile_status)."""
    sim.profile_status_column = "STATUS"
    try:
        for status, expected in ((None, ["efficy.profile_status"]), ("STATUS", [])):
            base = config("Prof")
            cfg = config(
                "Prof", efficy={**base.model_dump()["efficy"], "base_url": sim.url, "profile_status": {"field": status}}
            )
            with EfficyClient.from_config(cfg, api_key="efficy-test-key", policy=FAST) as efficy:
                problems, notes = profile_detail_problems(efficy, cfg)
            assert [p.path for p in problems] == expected and notes == []
            assert all("STATUS" in p.message for p in problems)
    finally:
        sim.profile_status_column = None
