"""An APSIS One opt-out recorded under a topic spelled in another case than the consent mapping that reads it.

The unsubscribe webhook names the topic as the automation spells it; the config names it as the admin typed it.
The route and the write-back match topics without case (docs/apsis-optout-automation.md: "matched to the consent
mappings without case"), but the syncs looked the recorded opt-out up by its exact key: an opt-out of a topic
not yet mapped, recorded as `...Newsletter-AB12`, did not block the opt-in of the mapping `...newsletter-ab12`
added later, and a mapping re-spelled in another case lost the opt-out recorded under its old spelling.
No contract says APSIS One's discriminators are case-sensitive: the safe side is that they match without case.

The real PersonSyncer, write-back and ApsisClient against the APSIS simulator over HTTP; the in-memory store.
"""

from __future__ import annotations

from typing import Any

from efficy_sync.config import config_from_dict
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBack
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, NEWS, RAW, apsis_sim, person  # noqa: F401
from tests.integration.test_existing_optouts import held, syncer
from tests.memory_store import MemoryPersonStateStore

SHOUTED = NEWS.replace("newsletter-ab12", "Newsletter-AB12")


class NoEfficy:
    """An opt-out of subscriptions no mapping covers is recorded, never written back: Efficy is not called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Efficy called ({name}) for an opt-out with nothing to write back")


def unsubscribe(store: MemoryPersonStateStore, topic: str) -> None:
    """The opt-out route's message for person 7, handled by the write-back under a config mapping no topic."""
    unmapped = config_from_dict({**RAW, "consent_mappings": []})
    message = OptOutMessage(
        integration_id=CFG.integration_id,
        event="email.unsubscribe",
        profile_key=7,
        slots=[SlotRef(topic=topic, channel="email")],
        occurred_at="2024-05-01T11:00:00.000Z",
    )
    result = WriteBack(unmapped, NoEfficy(), store).process(message)  # type: ignore[arg-type]
    assert result.skipped_slots == [f"{topic}|email"] and result.recorded == {7: [f"{topic}|email"]}


def test_an_opt_out_of_a_topic_in_another_case_blocks_the_opt_in_of_a_mapping_added_later(
    apsis_sim: ApsisSimulator,
) -> None:
    store = MemoryPersonStateStore()
    syncer(apsis_sim, store, consent_mappings=[]).sync(7, person(7), None)  # synced before NEWS was mapped
    unsubscribe(store, SHOUTED)  # the person unsubscribes; the automation names the topic in capitals

    mapped = syncer(apsis_sim, store)  # the admin maps the newsletter, spelled as APSIS lists it
    outcome = mapped.sync(7, person(7, "2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) != "opt-in", (
        "the person who unsubscribed in APSIS One was opted in again by a mapping spelled in another case",
        outcome.operations,
    )
    mapped.sync(7, {**person(7, "2024-05-03T10:00:00"), "FIRSTNAME": "New"}, store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) != "opt-in"

    # a CRM user takes them out of the profile and, later, back in: that is the explicit opt-in
    mapped.sync(7, {**person(7, "2024-05-04T10:00:00"), "profiles": []}, store.get(CFG.integration_id, 7))
    mapped.sync(7, person(7, "2024-05-05T10:00:00"), store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) == "opt-in"
    assert store.get(CFG.integration_id, 7).optouts == {}  # the record under the other spelling retired


def test_a_mapping_re_spelled_in_another_case_keeps_the_opt_out_recorded_under_the_old_spelling(
    apsis_sim: ApsisSimulator,
) -> None:
    store = MemoryPersonStateStore()
    shouted = [{"crm_profile": 12, "subscription": SHOUTED, "channel": "email"}]
    syncer(apsis_sim, store, consent_mappings=[]).sync(7, person(7), None)
    unsubscribe(store, SHOUTED)
    # under a config naming the topic as the automation did, the full sync keeps the opt-out
    old = syncer(apsis_sim, store, consent_mappings=shouted)
    old.sync(7, person(7, "2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    assert f"{SHOUTED}|email" in store.get(CFG.integration_id, 7).optouts

    # the admin corrects the spelling to the one APSIS lists; nothing changed for the person
    mapped = syncer(apsis_sim, store)
    mapped.sync(7, {**person(7, "2024-05-03T10:00:00"), "FIRSTNAME": "New"}, store.get(CFG.integration_id, 7))
    assert held(apsis_sim, 7) != "opt-in", "a config change of letter case undid an APSIS One opt-out"
