"""Two live opt-out records of one slot under two spellings of its topic (state.find_optout).

A record keeps the spelling its topic had when it came: the mapping's, or the webhook's for a topic not mapped
then. So one slot can hold an old opt-out, confirmed long ago under the mapping's spelling (the mapping was
removed since, so no sync retired it), and a newer one the route recorded under the webhook's spelling while
the topic was not mapped. Once the mapping is back, the newer opt-out must hold: the CRM membership that only
post-dates the old confirmation is no opt-in over it.
"""

from __future__ import annotations

from efficy_sync.consent import OptOutRecord
from efficy_sync.mapping import Desired
from efficy_sync.person_plan import consent_decisions
from efficy_sync.state import PersonState, find_optout

MAPPED = "usercreated.topics.Newsletter-AB12"
WEBHOOK = "usercreated.topics.newsletter-ab12"

#: opted out in 2023, written back and confirmed out of CRM profile 12 (the mapping existed then)
OLD = OptOutRecord(
    at="2023-01-01T10:00:00Z",
    source="apsis-webhook",
    confirmed=True,
    confirmed_stamp="2023-01-02T10:00:00",
    efficy_stamp="2023-01-02T10:00:00",
    crm_profile=12,
    recorded_at="2023-01-01T10:00:05Z",
)
#: opted out again in 2024, recorded while the topic was not mapped: nothing was written back
NEW = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis-webhook", recorded_at="2024-05-01T11:00:05Z")


def _state() -> PersonState:
    return PersonState(
        integration_id="acme",
        person_key="7",
        exists_in_apsis=True,
        change_stamp="2024-04-01T10:00:00",
        consents={f"{MAPPED}|email": "opt-in"},
        optouts={f"{MAPPED}|email": OLD, f"{WEBHOOK}|email": NEW},
    )


def test_the_opt_out_not_yet_confirmed_is_found_even_beside_a_confirmed_one_under_the_exact_spelling() -> None:
    found = find_optout(_state().optouts, MAPPED, "email")
    assert found is not None and found[1] == NEW, found


def test_a_membership_newer_than_an_old_confirmation_does_not_opt_in_over_a_newer_opt_out() -> None:
    # the CRM shows the person in profile 12 since 2024-03 (re-added after the 2023 confirmation), read in 2024-05
    desired = Desired(
        profile_key="7",
        attributes={},
        consents={(MAPPED, "email"): "opt-in"},
        tags={},
        email="a@example.com",
        mobile=None,
        change_stamp="2024-05-02T10:00:00",
        memberships={(MAPPED, "email"): True},
        crm_profiles={(MAPPED, "email"): 12},
    )
    decision = consent_decisions(desired, _state())[MAPPED, "email"][0]
    assert decision.type == "opt-out", decision


def test_the_exact_spelling_comes_first_among_records_alike() -> None:
    both_open = {f"{MAPPED}|email": NEW, f"{WEBHOOK}|email": NEW.model_copy(update={"at": "2024-06-01T00:00:00Z"})}
    assert find_optout(both_open, MAPPED, "email") == (f"{MAPPED}|email", NEW)
    assert find_optout({f"{WEBHOOK}|email": NEW}, MAPPED, "sms") is None  # another channel is another slot
