"""The diff between what the CRM wants and what was last pushed: unit cases, then hypothesis properties."""

from __future__ import annotations

import json
from pathlib import Path

from efficy_sync.config import load_config_file
from efficy_sync.consent import OptOutRecord
from efficy_sync.mapping import Desired, Skip, map_person
from efficy_sync.person_plan import (
    CreateProfile,
    DeleteProfile,
    PatchAttributes,
    PatchTags,
    SetConsent,
    is_stale,
    plan_for_delete,
    plan_for_skip,
    plan_operations,
)
from efficy_sync.state import PersonState, value_hash
from efficy_sync.state_updates import apply_operations
from efficy_sync.store.persons import state_document, state_item
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.properties import examples

CFG = load_config_file(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
NEWS = ("usercreated.topics.newsletter-ab12", "email")
SMS = ("usercreated.topics.sms-offers-cd34", "sms")
EVENTS = ("usercreated.topics.events-ef56", "email")
FIRST = "com.apsis1.attributes.firstname"


def person(**changes) -> dict:
    base = {
        "K_CONTACT": 1,
        "NAME": "Doe",
        "FIRSTNAME": "Jo",
        "EMAIL1": "jo@example.com",
        "MOBILE": "+32470000001",
        "LANGUAGE": "FR",
        "OPENED": "1",
        "ROBINSON": "0",
        "profiles": [12, 13],
        "D_CHANGE": "2024-05-01T10:00:00",
    }
    base.update(changes)
    return base


def desired(**changes) -> Desired:
    result = map_person(CFG, person(**changes), query_tags={"vip"})
    assert isinstance(result, Desired)
    return result


def synced(**changes) -> tuple[Desired, PersonState]:
    d = desired(**changes)
    return d, apply_operations(None, d, plan_operations(d, None))


# --- unit cases -----------------------------------------------------------------------------------------------


def test_new_person_is_created_with_everything_in_few_calls():
    d = desired()
    ops = plan_operations(d, None)
    assert ops == [
        CreateProfile("1"),
        PatchAttributes("1", {k: v for k, v in sorted(d.attributes.items())}),
        SetConsent("1", *NEWS, "opt-in"),
        SetConsent("1", *SMS, "opt-in"),
        PatchTags("1", {"newsletter-readers": True, "sms-club": True, "vip": True}),
    ]
    assert ops[1].attributes == dict(sorted(ops[1].attributes.items()))


def test_new_person_gets_no_first_time_opt_out_no_false_tags_and_no_empty_attributes():
    ops = plan_operations(desired(profiles=[], FIRSTNAME=""), None)
    assert not [op for op in ops if isinstance(op, SetConsent)]
    tags = [op for op in ops if isinstance(op, PatchTags)]
    assert tags == [PatchTags("1", {"vip": True})]
    [patch] = [op for op in ops if isinstance(op, PatchAttributes)]
    assert FIRST not in patch.attributes


def test_unchanged_person_costs_nothing():
    d, state = synced()
    assert plan_operations(d, state) == []
    assert plan_operations(desired(D_CHANGE="2024-05-02T00:00:00"), state) == []


def test_only_the_changed_attribute_is_patched_in_one_call():
    _, state = synced()
    ops = plan_operations(desired(FIRSTNAME="Joanna", D_CHANGE="2024-05-02T00:00:00"), state)
    assert ops == [PatchAttributes("1", {FIRST: "Joanna"})]


def test_emptied_attribute_is_cleared_and_skipped_attribute_left_alone():
    _, state = synced()
    ops = plan_operations(desired(FIRSTNAME="", MOBILE="0470 00 00 01", D_CHANGE="2024-05-02T00:00:00"), state)
    # the invalid mobile is left as it is; the sms opt-in stays (membership unchanged, nothing to send)
    assert ops == [PatchAttributes("1", {FIRST: None})]


def test_attribute_no_longer_mapped_is_left_as_it_is():
    """Removing a mapping stops syncing the attribute; it erases nobody's value (no breaker guards a clear)."""
    _, state = synced()
    d = desired(D_CHANGE="2024-05-02T00:00:00")
    trimmed = Desired(**{**d.__dict__, "attributes": {k: v for k, v in d.attributes.items() if k != FIRST}})
    assert plan_operations(trimmed, state) == []
    # mapped again later: an unchanged value is not sent again, a changed one is
    assert plan_operations(d, state) == []
    changed = desired(FIRSTNAME="Joanna", D_CHANGE="2024-05-03T00:00:00")
    assert plan_operations(changed, state) == [PatchAttributes("1", {FIRST: "Joanna"})]


def test_leaving_a_profile_opts_out_and_untags():
    _, state = synced()
    ops = plan_operations(desired(profiles=[13], D_CHANGE="2024-05-02T00:00:00"), state)
    assert ops == [SetConsent("1", *NEWS, "opt-out"), PatchTags("1", {"newsletter-readers": False})]


def test_joining_a_profile_opts_in():
    _, state = synced()
    ops = plan_operations(desired(profiles=[12, 13, 14], D_CHANGE="2024-05-02T00:00:00"), state)
    assert ops == [SetConsent("1", *EVENTS, "opt-in")]


def test_a_snapshot_older_than_the_last_applied_plans_nothing():
    _, state = synced(D_CHANGE="2024-05-02T00:00:00")
    old = desired(FIRSTNAME="Old", profiles=[], D_CHANGE="2024-05-01T00:00:00")
    assert plan_operations(old, state) == []
    assert apply_operations(state, old, []).change_stamp == "2024-05-02T00:00:00"


def test_a_deleted_profile_is_created_again():
    _, state = synced()
    gone = apply_operations(state, map_person(CFG, person(ROBINSON="1")), [DeleteProfile("1")])
    assert not gone.exists_in_apsis and gone.last_outcome == "deleted"
    ops = plan_operations(desired(D_CHANGE="2024-05-03T00:00:00"), gone)
    assert ops[0] == CreateProfile("1")
    assert SetConsent("1", *NEWS, "opt-in") in ops


def test_apsis_opt_out_blocks_the_opt_in_until_confirmed_then_a_newer_membership_opts_in():
    from efficy_sync.consent import merge_optouts

    _, state = synced()
    record = OptOutRecord(at="2024-05-01T10:30:00Z", source="apsis-unsubscribe")
    state = merge_optouts(state, {"usercreated.topics.newsletter-ab12|email": record})  # as read back
    still_member = desired(D_CHANGE="2024-05-01T11:00:00")  # a full sync before the write-back landed
    assert plan_operations(still_member, state) == []
    state = apply_operations(state, still_member, [])
    assert not state.optouts["usercreated.topics.newsletter-ab12|email"].confirmed

    written_back = desired(profiles=[13], D_CHANGE="2024-05-01T12:00:00")
    ops = plan_operations(written_back, state)
    assert ops == [PatchTags("1", {"newsletter-readers": False})]
    state = apply_operations(state, written_back, ops)
    record = state.optouts["usercreated.topics.newsletter-ab12|email"]
    assert record.confirmed and record.confirmed_stamp == "2024-05-01T12:00:00"

    rejoined = desired(D_CHANGE="2024-05-02T09:00:00")
    ops = plan_operations(rejoined, state)
    assert SetConsent("1", *NEWS, "opt-in") in ops
    state = apply_operations(state, rejoined, ops)
    assert "usercreated.topics.newsletter-ab12|email" not in state.optouts  # done with: opted in again
    assert plan_operations(rejoined, state) == []


def test_skipped_person_is_never_created():
    skip = map_person(CFG, person(OPENED="0"))
    assert isinstance(skip, Skip)
    for mode in ("leave", "untag", "delete"):
        assert plan_for_skip(skip, None, mode, managed_tags=CFG.managed_tags()) == []
    state = apply_operations(None, skip, [])
    assert (state.last_outcome, state.exists_in_apsis, state.skip_reason) == (
        "skipped",
        False,
        "OPENED equals '1' failed: value is '0'",
    )
    for mode in ("leave", "untag", "delete"):
        assert plan_for_skip(skip, state, mode, managed_tags=CFG.managed_tags()) == []


def test_person_who_stops_matching_is_left_untagged_or_deleted_as_configured():
    _, state = synced()
    skip = map_person(CFG, person(ROBINSON="1", D_CHANGE="2024-05-02T00:00:00"))
    assert plan_for_skip(skip, state, "leave", managed_tags=CFG.managed_tags()) == []
    assert plan_for_skip(skip, state, "untag", managed_tags=CFG.managed_tags()) == [
        PatchTags("1", {"newsletter-readers": False, "sms-club": False, "vip": False})
    ]
    assert plan_for_skip(skip, state, "delete", managed_tags=CFG.managed_tags()) == [DeleteProfile("1")]
    after = apply_operations(state, skip, [])
    assert after.last_outcome == "skipped" and after.exists_in_apsis
    assert after.skip_reason == "ROBINSON equals '0' failed: value is '1'"


def test_a_skipped_person_who_left_a_crm_profile_is_opted_out_whatever_on_condition_lost_says():
    """Leaving the profile is a CRM opt-out, and an opt-out creates nothing: a Robinson-listed person who also
    left the newsletter stayed subscribed in APSIS One for as long as they failed the conditions."""
    from efficy_sync.state import consent_key
    from efficy_sync.state_updates import skipped_state

    _, state = synced()  # opted in to NEWS (profile 12) and SMS (13)
    skip = map_person(CFG, person(ROBINSON="1", profiles=[13], D_CHANGE="2024-05-02T00:00:00"))
    assert isinstance(skip, Skip)
    out = SetConsent("1", NEWS[0], NEWS[1], "opt-out")
    tags = CFG.managed_tags()
    assert plan_for_skip(skip, state, "leave", managed_tags=tags) == [out]
    assert plan_for_skip(skip, state, "untag", managed_tags=tags) == [
        out,
        PatchTags("1", {"newsletter-readers": False, "sms-club": False, "vip": False}),
    ]
    assert plan_for_skip(skip, state, "delete", managed_tags=tags) == [DeleteProfile("1")]  # consents go with it
    stored = skipped_state("demo", 1, state, skip.change_stamp, skip, [out])
    assert stored.consents[consent_key(*NEWS)] == "opt-out" and stored.consents[consent_key(*SMS)] == "opt-in"
    assert plan_for_skip(skip, stored, "leave", managed_tags=tags) == []  # sent once
    assert plan_for_skip(skip, None, "leave", managed_tags=tags) == []  # never created, nothing to withdraw
    unread = {k: v for k, v in person(ROBINSON="1", D_CHANGE="2024-05-02T00:00:00").items() if k != "profiles"}
    skip_unread = map_person(CFG, unread)
    assert isinstance(skip_unread, Skip) and plan_for_skip(skip_unread, state, "leave", managed_tags=tags) == []
    older = map_person(CFG, person(ROBINSON="1", profiles=[13], D_CHANGE="2024-04-01T00:00:00"))
    assert plan_for_skip(older, state, "leave", managed_tags=tags) == []  # an older snapshot decides nothing


def test_a_null_where_a_condition_tests_a_value_untags_and_deletes_nobody():
    """JSON's null is "not given", not a value that fails the condition: the person is left as APSIS holds them
    (and a new one is not created on it)."""
    _, state = synced()
    for field, value in [("OPENED", None), ("ROBINSON", None), ("OPENED", {"key": 1, "value": "Yes"})]:
        # the demo's conditions: OPENED equals '1', ROBINSON equals '0'
        skip = map_person(CFG, person(**{field: value}, D_CHANGE="2024-05-02T00:00:00"))
        assert isinstance(skip, Skip) and skip.unreadable
        for mode in ("untag", "delete"):
            assert plan_for_skip(skip, state, mode, managed_tags=CFG.managed_tags()) == [], (field, mode)
            assert plan_for_skip(skip, None, mode, managed_tags=CFG.managed_tags()) == []


def test_untag_takes_away_only_the_tags_the_config_sets_now():
    """A tag whose mapping was removed may have been handed over to APSIS users: untag leaves it."""
    _, state = synced()
    skip = map_person(CFG, person(ROBINSON="1", D_CHANGE="2024-05-02T00:00:00"))
    only_news = ["newsletter-readers"]  # sms-club and vip no longer mapped
    assert plan_for_skip(skip, state, "untag", managed_tags=only_news) == [
        PatchTags("1", {"newsletter-readers": False})
    ]
    assert plan_for_delete(state, "untag", managed_tags=only_news) == [PatchTags("1", {"newsletter-readers": False})]
    assert plan_for_delete(state, "untag", managed_tags=[]) == []


def test_person_deleted_in_efficy():
    _, state = synced()
    assert plan_for_delete(state, "ignore", managed_tags=CFG.managed_tags()) == []
    assert plan_for_delete(state, "delete", managed_tags=CFG.managed_tags()) == [DeleteProfile("1")]
    assert plan_for_delete(state, "untag", managed_tags=CFG.managed_tags())[0] == PatchTags(
        "1", {"newsletter-readers": False, "sms-club": False, "vip": False}
    )
    assert plan_for_delete(None, "delete", managed_tags=CFG.managed_tags()) == []


def test_state_stores_hashes_not_personal_values_and_round_trips():
    _, state = synced()
    item = state_item(state)  # what the store writes
    text = json.dumps(item)
    assert "jo@example.com" not in text and "+32470000001" not in text and "Doe" not in text
    assert json.loads(item["doc"]["S"])["attribute_hashes"][FIRST] == value_hash("Jo") and len(value_hash("Jo")) == 16
    assert PersonState.model_validate_json(state_document(state)) == state


# --- properties -------------------------------------------------------------------------------------------------

ATTRS = [f"usercreated.attributes.a{i}" for i in range(5)]
SLOTS = [("usercreated.topics.t1", "email"), ("usercreated.topics.t2", "sms"), ("usercreated.topics.t3", "email")]
TAGS = ["t-a", "t-b", "t-c"]
values = st.one_of(st.none(), st.text(max_size=4), st.integers(-3, 3), st.booleans(), st.sampled_from(["2024-01-01"]))
stamps = st.sampled_from(["", "2024-05-01T10:00:00", "2024-05-01T11:00:00", "2024-05-01T11:00:00.000Z"])


@st.composite
def desireds(draw) -> Desired:
    attributes = draw(st.dictionaries(st.sampled_from(ATTRS), values, max_size=5))
    skipped = draw(
        st.frozensets(
            st.sampled_from([a for a in ATTRS if a not in attributes]) if len(attributes) < 5 else st.nothing()
        )
    )
    memberships = draw(st.dictionaries(st.sampled_from(SLOTS), st.booleans(), max_size=3))
    consents = {s: ("opt-in" if m else "opt-out") for s, m in memberships.items() if draw(st.booleans())}
    return Desired(
        profile_key="42",
        attributes=attributes,
        consents=consents,
        tags=draw(st.dictionaries(st.sampled_from(TAGS), st.booleans(), max_size=3)),
        email=None,
        mobile=None,
        change_stamp=draw(stamps),
        integration_id="prop",
        memberships=memberships,
        skipped_attributes=skipped,
    )


@st.composite
def states(draw) -> PersonState | None:
    if draw(st.booleans()):
        return None
    records = st.builds(
        OptOutRecord,
        at=stamps.filter(bool),
        source=st.just("apsis-unsubscribe"),
        confirmed=st.booleans(),
        confirmed_stamp=st.one_of(st.none(), stamps),
    )
    return PersonState(
        integration_id="prop",
        person_key="42",
        change_stamp=draw(stamps),
        attribute_hashes=draw(
            st.dictionaries(st.sampled_from(ATTRS), values.filter(lambda v: v is not None).map(value_hash))
        ),
        consents=draw(
            st.dictionaries(st.sampled_from([f"{t}|{c}" for t, c in SLOTS]), st.sampled_from(["opt-in", "opt-out"]))
        ),
        tags=draw(st.dictionaries(st.sampled_from(TAGS), st.booleans())),
        exists_in_apsis=draw(st.booleans()),
        optouts=draw(st.dictionaries(st.sampled_from([f"{t}|{c}" for t, c in SLOTS]), records, max_size=2)),
    )


@settings(max_examples=examples(150), deadline=None)
@given(desireds(), states())
def test_planning_again_after_applying_plans_nothing(d, state):
    ops = plan_operations(d, state)
    after = apply_operations(state, d, ops)
    assert plan_operations(d, after) == []
    assert apply_operations(after, d, []).model_dump(exclude={"updated_at"}) == after.model_dump(exclude={"updated_at"})


@settings(max_examples=examples(150), deadline=None)
@given(desireds(), states())
def test_operations_come_in_a_fixed_order_with_at_most_one_attribute_and_one_tag_call(d, state):
    ops = plan_operations(d, state)
    rank = {CreateProfile: 0, PatchAttributes: 1, SetConsent: 2, PatchTags: 3}
    assert [rank[type(op)] for op in ops] == sorted(rank[type(op)] for op in ops)
    assert sum(isinstance(op, PatchAttributes) for op in ops) <= 1
    assert sum(isinstance(op, PatchTags) for op in ops) <= 1
    assert not any(isinstance(op, DeleteProfile) for op in ops)
    if not is_stale(d.change_stamp, state):
        assert (ops[:1] == [CreateProfile("42")]) == (state is None or not state.exists_in_apsis)


@settings(max_examples=examples(100), deadline=None)
@given(
    reason=st.text(max_size=5),
    stamp=stamps,
    state=states(),
    mode=st.sampled_from(["leave", "untag", "delete"]),
    on_delete=st.sampled_from(["delete", "untag", "ignore"]),
)
def test_a_skipped_person_is_never_created(reason, stamp, state, mode, on_delete):
    skip = Skip(reason, None, "prop", "42", stamp)
    for ops in (
        plan_for_skip(skip, state, mode, managed_tags=CFG.managed_tags()),
        plan_for_delete(state, on_delete, managed_tags=CFG.managed_tags()),
    ):
        assert not any(isinstance(op, CreateProfile | PatchAttributes | SetConsent) for op in ops)
        after = apply_operations(state, skip, ops)
        if state is None or not state.exists_in_apsis:
            assert ops == [] and not after.exists_in_apsis
    assert plan_for_skip(skip, state, "leave", managed_tags=CFG.managed_tags()) == []


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and value_hash(a) == value_hash(b))


@settings(max_examples=examples(150), deadline=None)
@given(desireds(), desireds())
def test_only_changed_attributes_are_patched_and_the_result_is_what_the_crm_wants(first, second):
    first = Desired(**{**first.__dict__, "change_stamp": "", "skipped_attributes": frozenset()})
    second = Desired(**{**second.__dict__, "change_stamp": ""})
    state = apply_operations(None, first, plan_operations(first, None))
    pushed = {a: v for a, v in first.attributes.items() if v is not None}  # what APSIS holds now

    patches = [op for op in plan_operations(second, state) if isinstance(op, PatchAttributes)]
    patch = patches[0].attributes if patches else {}
    for name, value in patch.items():  # nothing sent that APSIS already holds
        assert not _same(pushed.get(name), value), name
    holds = {**pushed, **patch}
    holds = {a: v for a, v in holds.items() if v is not None}
    wanted = {a: v for a, v in second.attributes.items() if v is not None}
    # skipped or no longer mapped: left as APSIS holds it
    wanted |= {a: pushed[a] for a in pushed if a not in second.attributes}
    assert holds.keys() == wanted.keys()
    assert all(_same(holds[a], wanted[a]) for a in wanted)
