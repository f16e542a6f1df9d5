"""What a state says after calls whose effect we cannot know (an import that never reported back, a race with a
newer sync): state_updates.mark_unknown, read by the planner and by the read before a first opt-in.

Checked through the real planner (person_plan.plan_operations) and existing_optouts.first_opt_ins, so each
case states what the next sync sends, not how the state spells it.
"""

from __future__ import annotations

from efficy_sync.existing_optouts import first_opt_ins
from efficy_sync.mapping import Desired
from efficy_sync.person_plan import CreateProfile, PatchTags, SetConsent, plan_operations
from efficy_sync.state import PersonState
from efficy_sync.state_updates import raced_state, unconfirmed_state

NOW = "2026-01-01T00:00:00Z"
NEWS = "usercreated.topics.newsletter-ab12"
SLOT = (NEWS, "email")


def desired(member: bool | None = None, tags: dict[str, bool] | None = None) -> Desired:
    consents = {} if member is None else {SLOT: "opt-in" if member else "opt-out"}
    return Desired("7", {}, consents, tags or {}, "a@example.com", None, "", integration_id="i")  # type: ignore[arg-type]


def test_a_first_opt_in_never_confirmed_is_read_before_it_is_sent_again() -> None:
    """Marked "unknown", the slot was no longer a first opt-in: the next opt-in went out without the read that
    finds an opt-out APSIS held before the integration (the file itself never resubscribes)."""
    state = unconfirmed_state(None, "i", 7, [CreateProfile("7"), SetConsent("7", NEWS, "email", "opt-in")], NOW)
    assert state is not None
    ops = plan_operations(desired(member=True), state)
    assert SetConsent("7", NEWS, "email", "opt-in") in ops
    assert first_opt_ins(ops, state) == [SetConsent("7", NEWS, "email", "opt-in")]
    # and withdrawn when the person is no longer a member: APSIS may hold the file's opt-in
    assert SetConsent("7", NEWS, "email", "opt-out") in plan_operations(desired(member=False), state)


def test_an_unknown_slot_is_read_before_an_opt_in_whoever_wrote_it() -> None:
    """A race, or a file that never reported back (also as older code stored it), leaves "unknown": an opt-in
    there could overwrite an opt-out APSIS held before the integration, which the file kept. Read, it is kept."""
    stored = PersonState(
        integration_id="i", person_key="7", exists_in_apsis=True, consents={f"{NEWS}|email": "opt-out"}
    )
    state = raced_state(stored, [SetConsent("7", NEWS, "email", "opt-in")], NOW)
    assert state.consents == {f"{NEWS}|email": "unknown"}  # a value every deployed version reads
    ops = plan_operations(desired(member=True), state)
    assert first_opt_ins(ops, state) == [SetConsent("7", NEWS, "email", "opt-in")]


def test_a_tag_an_unconfirmed_file_set_is_taken_away_when_the_rules_drop_it() -> None:
    """Popped from the state, the tag read "not set": the untag never went out, and a tag the late file set
    stayed for good."""
    state = unconfirmed_state(None, "i", 7, [CreateProfile("7"), PatchTags("7", {"vip": True})], NOW)
    assert PatchTags("7", {"vip": False}) in plan_operations(desired(tags={"vip": False}), state)


def test_a_tag_an_unconfirmed_file_took_away_is_set_again_when_wanted() -> None:
    stored = PersonState(integration_id="i", person_key="7", exists_in_apsis=True, tags={"vip": True})
    state = unconfirmed_state(stored, "i", 7, [PatchTags("7", {"vip": False})], NOW)
    assert PatchTags("7", {"vip": True}) in plan_operations(desired(tags={"vip": True}), state)


def test_a_tag_whose_set_never_reported_back_is_set_again_while_wanted() -> None:
    """A tag PATCH answered 503 (or timed out) may not have reached APSIS: read as set, it was never sent again
    and the tag was missing for good (seen on the real-time path under faults)."""
    state = unconfirmed_state(None, "i", 7, [CreateProfile("7"), PatchTags("7", {"vip": True})], NOW)
    assert state is not None and state.tags_unknown == ["vip"]
    assert PatchTags("7", {"vip": True}) in plan_operations(desired(tags={"vip": True}), state)


def test_a_tag_whose_removal_never_reported_back_is_taken_away_again_while_unwanted() -> None:
    stored = PersonState(integration_id="i", person_key="7", exists_in_apsis=True, tags={"vip": True})
    state = unconfirmed_state(stored, "i", 7, [PatchTags("7", {"vip": False})], NOW)
    assert PatchTags("7", {"vip": False}) in plan_operations(desired(tags={"vip": False}), state)


def test_a_tag_confirmed_later_is_known_again_and_costs_nothing() -> None:
    from efficy_sync.state_updates import apply_operations

    state = unconfirmed_state(None, "i", 7, [CreateProfile("7"), PatchTags("7", {"vip": True})], NOW)
    assert state is not None
    ops = plan_operations(desired(tags={"vip": True}), state)
    confirmed = apply_operations(state, desired(tags={"vip": True}), [op for op in ops if isinstance(op, PatchTags)])
    assert confirmed.tags == {"vip": True} and confirmed.tags_unknown == []
    assert not [op for op in plan_operations(desired(tags={"vip": True}), confirmed) if isinstance(op, PatchTags)]


def test_untag_on_a_lost_condition_takes_away_a_tag_that_may_be_set() -> None:
    from efficy_sync.mapping import Skip
    from efficy_sync.person_plan import plan_for_skip

    stored = PersonState(integration_id="i", person_key="7", exists_in_apsis=True, tags={"vip": True})
    state = unconfirmed_state(stored, "i", 7, [PatchTags("7", {"vip": False})], NOW)
    assert state is not None
    skip = Skip("ROBINSON is 1", integration_id="i", profile_key="7")
    assert plan_for_skip(skip, state, "untag", managed_tags={"vip"}) == [PatchTags("7", {"vip": False})]


def test_query_tag_delta_sends_a_tag_that_never_reported_back_either_way() -> None:
    from efficy_sync.fullsync.tags import tag_delta

    unsure_set = unconfirmed_state(None, "i", 7, [CreateProfile("7"), PatchTags("7", {"vip": True})], NOW)
    assert tag_delta({"vip": True}, unsure_set, will_exist=True) == {"vip": True}
    stored = PersonState(integration_id="i", person_key="7", exists_in_apsis=True, tags={"vip": True})
    unsure_unset = unconfirmed_state(stored, "i", 7, [PatchTags("7", {"vip": False})], NOW)
    assert tag_delta({"vip": False}, unsure_unset, will_exist=True) == {"vip": False}


def test_an_untag_on_a_lost_condition_makes_the_tag_known_again() -> None:
    """Left in tags_unknown after the untag went through, every later sync sent it again, each time a removal
    counted against a base that no longer held the tag (the breaker would halt full syncs)."""
    from efficy_sync.mapping import Skip
    from efficy_sync.person_plan import plan_for_skip
    from efficy_sync.safety import base_counts
    from efficy_sync.state_updates import skipped_state

    stored = PersonState(integration_id="i", person_key="7", exists_in_apsis=True, tags={"vip": True})
    state = unconfirmed_state(stored, "i", 7, [PatchTags("7", {"vip": True})], NOW)  # a 503 on the tag call
    assert state is not None
    assert base_counts([state])["base:tagged:vip"] == 1  # an unknown tag may be set: the base counts it
    skip = Skip("ROBINSON is 1", integration_id="i", profile_key="7")
    ops = plan_for_skip(skip, state, "untag", managed_tags={"vip"})
    assert ops == [PatchTags("7", {"vip": False})]
    after = skipped_state("i", 7, state, "", skip, ops)
    assert after.tags_unknown == [] and after.tags == {"vip": False}
    assert plan_for_skip(skip, after, "untag", managed_tags={"vip"}) == []
