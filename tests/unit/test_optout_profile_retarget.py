"""A confirmed APSIS opt-out keeps the CRM profile it was confirmed for: once the slot maps another profile, a
membership of that one (held all along, perhaps) is no CRM user's opt-in, until the CRM shows the person out of
the new profile and back in. Records confirmed before the profile was kept decide as before."""

from __future__ import annotations

from efficy_sync.consent import OptOutRecord, confirm, decide

OPTED_OUT = OptOutRecord(at="2024-05-01T10:00:00Z", source="apsis")
CONFIRMED_FOR_12 = OPTED_OUT.model_copy(
    update={"confirmed": True, "confirmed_stamp": "2024-05-01T10:05:00", "crm_profile": 12}
)


def test_a_membership_of_the_newly_mapped_profile_keeps_the_opt_out() -> None:
    decision = decide(True, "opt-out", CONFIRMED_FOR_12, "2024-06-01T09:00:00", crm_profile=15)
    assert decision.type == "opt-out" and "CRM profile 15" in decision.reason


def test_the_same_profile_member_again_later_is_opted_in_as_before() -> None:
    assert decide(True, "opt-out", CONFIRMED_FOR_12, "2024-06-01T09:00:00", crm_profile=12).type == "opt-in"


def test_out_of_the_new_profile_and_back_in_opts_in() -> None:
    out = confirm(CONFIRMED_FOR_12, False, "2024-06-02T09:00:00", crm_profile=15)
    assert out is not None and out.crm_profile == 15 and out.confirmed_stamp == "2024-06-02T09:00:00"
    assert decide(True, "opt-out", out, "2024-06-01T09:00:00", crm_profile=15).type == "opt-out"  # older read
    assert decide(True, "opt-out", out, "2024-06-03T09:00:00", crm_profile=15).type == "opt-in"


def test_a_record_confirmed_without_its_profile_decides_as_before() -> None:
    legacy = CONFIRMED_FOR_12.model_copy(update={"crm_profile": None})
    assert decide(True, "opt-out", legacy, "2024-06-01T09:00:00", crm_profile=15).type == "opt-in"
    assert confirm(legacy, False, "2024-06-02T09:00:00", crm_profile=15) is legacy


def test_a_sync_confirming_a_record_keeps_the_profile_it_saw_the_person_out_of() -> None:
    confirmed = confirm(OPTED_OUT, False, "2024-05-01T10:05:00", crm_profile=12)
    assert confirmed is not None and confirmed.confirmed and confirmed.crm_profile == 12
