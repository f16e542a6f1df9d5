"""An opt-out APSIS One holds where we never sent a consent (a migration from another connector, an opt-out made
by a route that never called ours) is read before the first opt-in and kept: the real PersonSyncer and
ApsisClient against the APSIS simulator (existing_optouts.py)."""

from __future__ import annotations

from typing import Any

from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.config import config_from_dict
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS, RAW, SLOT, apsis_sim, person  # noqa: F401
from tests.memory_store import MemoryPersonStateStore


def held(sim: ApsisSimulator, key: int) -> str | None:
    profile = sim.get_profile(CRM, str(key)) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


def client(sim: ApsisSimulator) -> ApsisClient:
    return ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)


def syncer(sim: ApsisSimulator, store: MemoryPersonStateStore, **raw: Any) -> PersonSyncer:
    cfg = config_from_dict({**RAW, **raw, "apsis": {**RAW["apsis"], **raw.get("apsis", {})}})
    return PersonSyncer(cfg, client(sim), store, email_lookup=lambda address: [])


def test_a_mapping_added_later_keeps_an_opt_out_apsis_held_until_the_crm_re_adds_the_person(
    apsis_sim: ApsisSimulator,
) -> None:
    store = MemoryPersonStateStore()
    syncer(apsis_sim, store, consent_mappings=[]).sync(7, person(7), None)  # synced before NEWS was mapped
    client(apsis_sim).set_consent("7", NEWS, "email", "opt-out")  # by the API: no automation tells us
    mapped = syncer(apsis_sim, store)

    outcome = mapped.sync(7, person(7, "2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) == "opt-out", outcome.operations  # before: opted in over it
    assert store.get(CFG.integration_id, 7).optouts[SLOT].source == "apsis-existing"
    # a later change of the person sends no opt-in either
    mapped.sync(7, {**person(7, "2024-05-03T10:00:00"), "FIRSTNAME": "New"}, store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) == "opt-out"

    # a CRM user takes them out of the profile and, later, back in: that is the explicit opt-in
    mapped.sync(7, {**person(7, "2024-05-04T10:00:00"), "profiles": []}, store.get(CFG.integration_id, 7))
    mapped.sync(7, person(7, "2024-05-05T10:00:00"), store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) == "opt-in"


def test_a_first_load_reads_only_when_told_the_account_already_holds_profiles(apsis_sim: ApsisSimulator) -> None:
    apsis = client(apsis_sim)
    for key in (8, 9):  # profiles another connector created, opted out there
        apsis.create_profile(str(key))
        apsis.set_consent(str(key), NEWS, "email", "opt-out")

    syncer(apsis_sim, MemoryPersonStateStore()).sync(8, person(8), None)
    assert held(apsis_sim, 8) == "opt-in"  # the default (known_profiles): the README names this case

    always = syncer(apsis_sim, MemoryPersonStateStore(), apsis={"existing_optouts": "always"})
    always.sync(9, person(9), None)
    assert held(apsis_sim, 9) == "opt-out"
    always.sync(10, person(10), None)  # a new profile: the read finds none, the opt-in goes out
    assert held(apsis_sim, 10) == "opt-in"


def test_an_opt_out_the_route_records_after_a_page_read_its_chunk_is_not_overwritten(
    apsis_sim: ApsisSimulator,
) -> None:
    """The page syncs from its chunk's read (fresh: no re-read before an opt-in). The route's newer record
    refuses ours, so the plan must be made again from the stored state, not sent as it was."""
    from datetime import UTC, datetime

    from efficy_sync.consent import OptOutRecord

    store = MemoryPersonStateStore()
    syncer(apsis_sim, store, consent_mappings=[]).sync(7, person(7), None)
    chunk_read = store.get(CFG.integration_id, 7)
    client(apsis_sim).set_consent("7", NEWS, "email", "opt-out")  # the person unsubscribes; the route records it
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    route = OptOutRecord(at=now, source="apsis", awaiting_writeback=True, recorded_at=now)
    assert store.record_optout(CFG.integration_id, 7, SLOT, route)
    syncer(apsis_sim, store).sync(7, person(7, "2024-05-02T10:00:00"), chunk_read, fresh=True)
    assert held(apsis_sim, 7) == "opt-out"


def test_a_dry_run_reads_too_and_shows_no_opt_in_over_an_opt_out_apsis_holds(apsis_sim: ApsisSimulator) -> None:
    """A dry run that showed the opt-in the real run withholds would tell a consultant the sync overwrites it."""
    store = MemoryPersonStateStore()
    syncer(apsis_sim, store, consent_mappings=[]).sync(7, person(7), None)
    client(apsis_sim).set_consent("7", NEWS, "email", "opt-out")
    cfg = config_from_dict(RAW)
    dry = PersonSyncer(cfg, client(apsis_sim), store, email_lookup=lambda address: [], dry_run=True)
    before = store.get(CFG.integration_id, 7)

    outcome = dry.sync(7, person(7, "2024-05-02T10:00:00"), before)
    assert not [op for op in outcome.operations if getattr(op, "type", None) == "opt-in"], outcome.operations
    assert held(apsis_sim, 7) == "opt-out"
    assert store.get(CFG.integration_id, 7) == before  # nothing recorded by a dry run
    # and without an opt-out in APSIS, the dry run shows the opt-in the real run sends
    client(apsis_sim).set_consent("7", NEWS, "email", "opt-in")
    outcome = dry.sync(7, person(7, "2024-05-02T10:00:00"), before)
    assert [op.type for op in outcome.operations if getattr(op, "type", None) == "opt-in"] == ["opt-in"]
