"""`reconcile --fix` against APSIS One profile exports of other shapes than the simulator's own (the export's
shape is not documented: contracts/apsis-one.md §9). Read as "no consent" or "no profile", the repair opted
people in over opt-outs they had made in APSIS One (by API or import, which our route never hears of). A repair
that ends in an opt-in now reads the person's APSIS consents first. Real Reconciler, fix, clients and
PersonSyncer against the Efficy and APSIS simulators over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import needed_fields
from efficy_sync.reconcile_run import Reconciler, Scope, fix
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims import apsis_export as sim_export
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
CRM = "com.apsis1.keyspaces.crm-id"
SECTION = "com.apsis1.sections.default"
CFG = config_from_dict(
    {
        "integration_id": "shapes",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/e",
            "webhook_secret_secret": "x/w",
            "page_size": 10,
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": SECTION,
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
    }
)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    esim = EfficySimulator().start()
    asim = ApsisSimulator(client_id="p", client_secret="p-secret", rate_limits=False).start()
    esim.upsert_persons(
        [{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"p{k}@example.com", "profiles": [12]} for k in (1, 2, 3)]
    )
    apsis = ApsisClient(asim.url, "p", "p-secret", section=SECTION, policy=FAST)
    states = MemoryPersonStateStore()
    with EfficyClient(esim.url, esim.api_key, policy=FAST) as efficy:
        syncer = PersonSyncer(CFG, apsis, states, email_lookup=lambda _: [])
        for key, p in efficy.get_persons([1, 2, 3], needed_fields(CFG)).items():
            syncer.sync(key, p, None)
        # person 2 unsubscribes by API / import behind our back: APSIS holds an opt-out we never heard of
        apsis.set_consent("2", NEWS, "email", "opt-out")
        yield {"esim": esim, "asim": asim, "apsis": apsis, "efficy": efficy, "states": states, "syncer": syncer}
    esim.stop()
    asim.stop()


def consent_of(asim: ApsisSimulator, key: str) -> set[str]:
    p = asim.get_profile(CRM, key)
    return {c["type"] for c in p["consents"] if c["topic"] == NEWS}


def run_fix_and_worker(world: dict[str, Any]) -> dict[str, Any]:
    """reconcile --fix, then what the worker does with each queued change: fresh Efficy read + PersonSyncer."""
    result = Reconciler(CFG, world["efficy"], world["apsis"], world["states"]).run(Scope())
    queued: list[Any] = []
    fixed = fix(CFG, result, world["states"], queued.extend)
    for change in queued:
        k = change.person_key
        persons = world["efficy"].get_persons([k], needed_fields(CFG))
        world["syncer"].sync(k, persons.get(k), world["states"].get("shapes", k))
    return {"report": result.report.to_dict(), "fix": fixed}


def test_the_simulator_s_own_shape_keeps_the_opt_out(world: dict[str, Any]) -> None:
    out = run_fix_and_worker(world)
    assert out["report"]["notes"]["kept_optouts"] == 1 and out["fix"]["enqueued"] == 0
    assert consent_of(world["asim"], "2") == {"opt-out"}


def _patch_row(monkeypatch: pytest.MonkeyPatch, change) -> None:
    original = sim_export.ProfileExports._row

    def row(profile, job):  # type: ignore[no-untyped-def]
        return change(original(profile, job))

    monkeypatch.setattr(sim_export.ProfileExports, "_row", staticmethod(row))


@pytest.mark.parametrize(
    "variant", ["topics_under_other_key", "topic_case", "keys_as_list_other_names", "keys_case", "person_2_left_out"]
)
def test_a_repair_after_an_export_of_another_shape_keeps_an_apsis_opt_out(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    def change(row: dict[str, Any]) -> dict[str, Any]:
        if variant == "topics_under_other_key":
            row["topic_consents"] = row.pop("topics")
        elif variant == "topic_case":
            for t in row["topics"]:
                t["topic_discriminator"] = t["topic_discriminator"].upper()
        elif variant == "keys_as_list_other_names":
            ((ks, k),) = row["keys"].items()
            row["keys"] = [{"keyspace": ks, "key": k}]
        elif variant == "person_2_left_out" and "2" in row["keys"].values():
            row["keys"] = {"com.apsis1.keyspaces.email": "p2@example.com"}  # as if the export had no row of ours
        elif variant == "keys_case":
            ((ks, k),) = row["keys"].items()
            row["keys"] = {ks.upper(): k}
        return row

    _patch_row(monkeypatch, change)
    out = run_fix_and_worker(world)
    if variant == "person_2_left_out":  # "missing": the repair re-creates the profile, reading its consents first
        assert out["report"]["counts"]["missing"] == 1 and out["fix"]["enqueued"] == 1
    elif variant.startswith("keys"):  # read as what they are (another spelling of our keyspace): nobody missing
        assert out["report"]["counts"]["missing"] == 0
    else:  # consents we cannot match look like "no consent": drift, and its repair runs
        assert out["fix"]["enqueued"] >= 1
    assert consent_of(world["asim"], "2") == {"opt-out"}, "reconcile --fix opted in over an APSIS opt-out"
    assert consent_of(world["asim"], "1") == {"opt-in"} and consent_of(world["asim"], "3") == {"opt-in"}
