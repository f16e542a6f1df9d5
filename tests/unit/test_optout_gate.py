"""What the opt-out write-back's sync asks the real-time breaker (optout_gate.py): removals beyond the person's
own decision are judged (a tightened condition's delete or untags); the opt-out confirming their APSIS unsubscribe
and the tag mirroring the CRM profile it took them out of are not counted, and never held on their own."""

from __future__ import annotations

from typing import Any

from efficy_sync.config import config_from_dict
from efficy_sync.consent import OptOutRecord
from efficy_sync.optout_gate import OptOutGate, judged, own_tags
from efficy_sync.optout_intake import Slot
from efficy_sync.person_plan import DeleteProfile, PatchTags, SetConsent
from efficy_sync.safety import gated
from efficy_sync.state import PersonState

from tests.unit.test_optout_sync import CFG, NEWS, SLOT

RAW = CFG.model_dump(mode="json", exclude_none=True)
TWO = config_from_dict(
    {
        **RAW,
        "tags": {
            "profiles": [
                {"crm_profile": 12, "tag": "newsletter-readers"},
                {"crm_profile": 12, "tag": "news"},
                {"crm_profile": 14, "tag": "vip"},
            ]
        },
    }
)
OUT_OF_12 = [Slot(NEWS, "email", 12)]


class Gate:
    """The real-time gate's answer, and whom it was asked about."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[int, list[Any]]] = []

    def admit(self, key: int, removals: list[Any]) -> bool:
        self.asked.append((key, removals))
        return self.answer


def unsubscribed() -> PersonState:
    record = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis", confirmed=True)
    return PersonState(
        integration_id="acme",
        person_key="7",
        exists_in_apsis=True,
        consents={SLOT: "opt-in"},
        tags={"newsletter-readers": True, "news": True, "vip": True},
        optouts={SLOT: record},
    )


def test_the_tags_of_the_crm_profile_the_opt_out_left_are_the_person_s_own() -> None:
    assert own_tags(TWO, OUT_OF_12) == {"newsletter-readers", "news"}
    assert own_tags(TWO, []) == frozenset()


def test_judged_drops_only_the_untags_of_own_tags() -> None:
    own = frozenset({"newsletter-readers"})
    assert judged([PatchTags("7", {"newsletter-readers": False})], own) == []
    mixed = judged([PatchTags("7", {"newsletter-readers": False, "vip": False}), DeleteProfile("7")], own)
    assert mixed == [PatchTags("7", {"vip": False}), DeleteProfile("7")]


def test_an_unsubscriber_s_own_opt_out_and_tag_go_out_even_with_the_breaker_tripped() -> None:
    """The rule that the opt-out confirming an APSIS unsubscribe is no removal still holds through the gate."""
    inner = Gate(answer=False)  # the breaker is tripped: everything it is asked about is held
    gate = OptOutGate(TWO, inner)
    gate.for_slots(OUT_OF_12)
    ops = [SetConsent("7", NEWS, "email", "opt-out"), PatchTags("7", {"newsletter-readers": False, "news": False})]
    sent, _, held = gated(7, ops, unsubscribed(), gate)
    assert sent == ops and not held and inner.asked == []


def test_a_tightened_condition_s_delete_is_judged_by_the_real_time_gate() -> None:
    inner = Gate(answer=False)
    gate = OptOutGate(TWO, inner)
    gate.for_slots(OUT_OF_12)
    sent, removals, held = gated(7, [DeleteProfile("7")], unsubscribed(), gate)
    assert held and sent == [] and removals == [DeleteProfile("7")]
    assert inner.asked == [(7, [DeleteProfile("7")])]


def test_an_untag_beyond_the_opt_out_is_judged_and_holds_the_person_s_removals() -> None:
    inner = Gate(answer=False)
    gate = OptOutGate(TWO, inner)
    gate.for_slots(OUT_OF_12)
    ops = [SetConsent("7", NEWS, "email", "opt-out"), PatchTags("7", {"newsletter-readers": False, "vip": False})]
    sent, _, held = gated(7, ops, unsubscribed(), gate)
    assert held and inner.asked == [(7, [PatchTags("7", {"vip": False})])]  # only `vip` counted
    assert sent == [SetConsent("7", NEWS, "email", "opt-out")]  # the opt-out itself is never held


def test_the_own_tags_are_per_person_not_left_over_from_the_previous_one() -> None:
    inner = Gate(answer=True)
    gate = OptOutGate(TWO, inner)
    gate.for_slots(OUT_OF_12)
    gate.for_slots([])  # the next person's opt-out covered no mapped profile
    assert gate.admit(8, [PatchTags("8", {"news": False})]) and inner.asked == [(8, [PatchTags("8", {"news": False})])]
