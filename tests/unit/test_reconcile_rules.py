"""Drift categories (efficy_sync.reconcile): one Efficy person + our state + the exported APSIS profile.

Each category is planted on a profile that is otherwise exactly what a clean sync leaves, and the repair is
checked through the sync's own planner: the state `invalidate` stores must make person_plan.plan_operations (or the
skip / delete planners) send exactly the call that removes the drift, and never an opt-in over an opt-out.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from efficy_sync.clients.apsis_export import ExportedProfile, parse_export
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.config import load_config_file
from efficy_sync.consent import OptOutRecord
from efficy_sync.existing_optouts import first_opt_ins, worth_reading
from efficy_sync.mapping import Desired, Skip, map_person
from efficy_sync.person_plan import (
    DeleteProfile,
    PatchAttributes,
    PatchTags,
    SetConsent,
    plan_for_delete,
    plan_for_skip,
    plan_operations,
)
from efficy_sync.reconcile import DriftReport, compare_person, invalidate
from efficy_sync.state import PersonState
from efficy_sync.state_updates import apply_operations

ROOT = Path(__file__).resolve().parents[2]
CFG = load_config_file(ROOT / "examples" / "demo.yaml")
NEWS = ("usercreated.topics.newsletter-ab12", "email")
SMS = ("usercreated.topics.sms-offers-cd34", "sms")
FIRSTNAME = "com.apsis1.attributes.firstname"


def person(**changes) -> dict:
    base = {
        "K_CONTACT": 7,
        "NAME": "Doe",
        "FIRSTNAME": "Johnny",
        "EMAIL1": "john.doe@example.com",
        "MOBILE": "+32470000001",
        "LANGUAGE": "FR",
        "OPENED": "1",
        "ROBINSON": "0",
        "profiles": [12],
        "D_CHANGE": "2024-05-01T10:00:00",
    }
    base.update(changes)
    return base


def synced(p: dict) -> tuple[PersonState, ExportedProfile]:
    """What a clean sync leaves: our state and APSIS One's profile (consents as the rules sent them)."""
    desired = map_person(CFG, p)
    assert isinstance(desired, Desired)
    ops = plan_operations(desired, None)
    state = apply_operations(None, desired, ops).model_copy(update={"revision": 1})
    profile = ExportedProfile(key=desired.profile_key)
    for op in ops:
        if isinstance(op, PatchAttributes):
            profile.attributes.update({k: v for k, v in op.attributes.items() if v is not None})
        elif isinstance(op, SetConsent):
            profile.consents[(op.topic, op.channel)] = op.type
        elif isinstance(op, PatchTags):
            profile.tags |= {t for t, on in op.tags.items() if on}
    return state, profile


def categories(check) -> list[str]:
    return sorted(d.category for d in check.drifts)


def repair_plan(p: dict | None, check, state: PersonState | None):
    """What the normal sync sends once `invalidate`'s state is stored."""
    new = invalidate(CFG.integration_id, check, state)
    assert new is not None
    if p is None:
        return plan_for_delete(new, CFG.on_delete, managed_tags=CFG.managed_tags())
    result = map_person(CFG, p)
    if isinstance(result, Skip):
        return plan_for_skip(result, new, CFG.on_condition_lost, managed_tags=CFG.managed_tags())
    return plan_operations(result, new)


def test_a_clean_sync_is_no_drift():
    p = person(profiles=[12, 13])
    state, profile = synced(p)
    check = compare_person(CFG, 7, p, state, profile)
    assert check.drifts == [] and check.notes == []


def test_missing_profile_is_drift_and_the_repair_creates_it():
    p = person()
    state, _ = synced(p)  # our state says it exists: APSIS lost it behind our back
    check = compare_person(CFG, 7, p, state, None)
    assert categories(check) == ["missing"]
    plan = repair_plan(p, check, state)
    # every attribute again: the v2 PATCH of a profile that is gone re-creates it (send.send_one); the profile
    # counts as existing, so the opt-in is a first one, read against APSIS's consents before it goes out
    assert type(plan[0]).__name__ == "PatchAttributes" and len(plan[0].attributes) >= 2
    assert SetConsent("7", *NEWS, "opt-in") in plan
    repaired = invalidate(CFG.integration_id, check, state)
    assert repaired is not None and first_opt_ins(plan, repaired) and worth_reading(CFG, repaired)


def test_a_person_failing_the_conditions_is_never_missing():
    p = person(ROBINSON="1")
    assert compare_person(CFG, 7, p, None, None).drifts == []


def test_attribute_drift_names_the_attribute_never_the_value_and_is_resent():
    p = person()
    state, profile = synced(p)
    profile.attributes[FIRSTNAME] = "Someone Else"
    check = compare_person(CFG, 7, p, state, profile)
    assert categories(check) == ["attributes"]
    assert check.drifts[0].detail == {"attribute": FIRSTNAME, "should": "update"}
    assert "Someone" not in repr(check.drifts) and "Johnny" not in repr(check.drifts)
    assert repair_plan(p, check, state) == [PatchAttributes("7", {FIRSTNAME: "Johnny"})]


def test_an_attribute_the_mapping_clears_but_apsis_holds_is_cleared():
    state, profile = synced(person(FIRSTNAME="Old"))  # we sent "Old"; the CRM field was emptied behind our back
    p = person(FIRSTNAME="")
    check = compare_person(CFG, 7, p, state, profile)
    assert [d.detail for d in check.drifts] == [{"attribute": FIRSTNAME, "should": "clear"}]
    assert repair_plan(p, check, state) == [PatchAttributes("7", {FIRSTNAME: None})]


def test_a_value_we_never_wrote_where_the_crm_field_is_empty_is_kept():
    """The sync clears only a value it sent (person_plan); one typed into APSIS One where the CRM field was always
    empty is a note, and --fix leaves it (it blanked it)."""
    p = person(FIRSTNAME="")
    state, profile = synced(p)
    profile.attributes[FIRSTNAME] = "Typed in APSIS"
    check = compare_person(CFG, 7, p, state, profile)
    assert check.drifts == [] and check.notes == [("kept_values", {"attribute": FIRSTNAME})]
    assert invalidate(CFG.integration_id, check, state) is None


def test_numbers_given_back_as_text_are_not_drift():
    p = person()
    state, profile = synced(p)
    profile.attributes["com.apsis1.attributes.crmid"] = 7  # mapped as "7"
    assert compare_person(CFG, 7, p, state, profile).drifts == []


def test_opt_in_in_apsis_for_a_non_member_is_withdrawn():
    p = person(profiles=[])
    state, profile = synced(person())  # was a member; left the CRM profile, APSIS still has the opt-in
    state = state.model_copy(update={"consents": {}})  # and our state lost track of it
    check = compare_person(CFG, 7, p, state, profile)
    consent = [d for d in check.drifts if d.category == "consents"]
    assert [d.detail for d in consent] == [
        {"topic": NEWS[0], "channel": "email", "apsis": "opt-in", "rules": "opt-out"}
    ]
    assert SetConsent("7", *NEWS, "opt-out") in repair_plan(p, check, state)


def test_an_apsis_opt_out_is_never_drift_to_fix_into_an_opt_in():
    p = person()
    state, profile = synced(p)
    profile.consents[NEWS] = "opt-out"  # an unsubscribe we never heard of (made by API or import)
    check = compare_person(CFG, 7, p, state, profile)
    assert check.drifts == []
    assert check.notes == [("kept_optouts", {"topic": NEWS[0], "channel": "email"})]


def test_a_double_opt_in_awaiting_confirmation_is_left_to_the_person():
    """An opt-in sent over a pending double opt-in would skip the confirmation the double opt-in asks for."""
    p = person()
    state, profile = synced(p)
    profile.consents[NEWS] = "pending-opt-in"
    check = compare_person(CFG, 7, p, state, profile)
    assert check.drifts == []
    assert check.notes == [("pending_opt_ins", {"topic": NEWS[0], "channel": "email"})]


def test_a_confirmed_double_opt_in_is_an_opt_in():
    p = person()
    state, profile = synced(p)
    profile.consents[NEWS] = "confirmed-opt-in"
    check = compare_person(CFG, 7, p, state, profile)
    assert check.drifts == [] and check.notes == []


def we_sent_the_opt_out() -> tuple[PersonState, ExportedProfile]:
    """A member synced (opt-in), then a sync that found them out of the profile sent the opt-out."""
    state, profile = synced(person())
    out = person(profiles=[], D_CHANGE="2024-05-01T11:00:00")
    desired = map_person(CFG, out)
    assert isinstance(desired, Desired)
    operations = plan_operations(desired, state)
    assert SetConsent("7", *NEWS, "opt-out") in operations
    state = apply_operations(state, desired, operations)
    profile.consents[NEWS] = "opt-out"
    assert state.consents[f"{NEWS[0]}|email"] == "opt-out"
    return state, profile


def test_an_opt_out_this_integration_sent_is_drift_once_the_crm_opts_in_again():
    """A wrong mapping took persons out (we sent the opt-outs); restored, the CRM membership decides, as the sync
    does: reconcile must not call them kept when the next sync opts them in."""
    state, profile = we_sent_the_opt_out()
    back = person(D_CHANGE="2024-05-02T10:00:00")
    check = compare_person(CFG, 7, back, state, profile)
    assert ("kept_optouts", {"topic": NEWS[0], "channel": "email"}) not in check.notes
    assert {
        "topic": NEWS[0],
        "channel": "email",
        "apsis": "opt-out",
        "rules": "opt-in",
        "opt_out_by": "this integration",
    } in [d.detail for d in check.drifts if d.category == "consents"]
    assert SetConsent("7", *NEWS, "opt-in") in repair_plan(back, check, state)


def test_an_opt_out_we_sent_stays_kept_once_the_person_also_unsubscribed_in_apsis():
    state, profile = we_sent_the_opt_out()
    record = OptOutRecord(at="2024-05-01T12:00:00Z", source="apsis-unsubscribe", awaiting_writeback=True)
    state = state.model_copy(update={"optouts": {f"{NEWS[0]}|email": record}})
    check = compare_person(CFG, 7, person(D_CHANGE="2024-05-02T10:00:00"), state, profile)
    assert not [d for d in check.drifts if d.category == "consents" and d.detail.get("rules") == "opt-in"]


def test_our_recorded_opt_out_wins_over_membership_and_an_apsis_opt_in_is_drift():
    p = person()
    state, profile = synced(p)
    record = OptOutRecord(at="2024-06-01T00:00:00Z", source="apsis-unsubscribe", awaiting_writeback=True)
    state = state.model_copy(update={"optouts": {f"{NEWS[0]}|email": record}})
    check = compare_person(CFG, 7, p, state, profile)  # APSIS still shows the opt-in
    assert [d.detail["rules"] for d in check.drifts] == ["opt-out"]
    plan = repair_plan(p, check, state)
    assert SetConsent("7", *NEWS, "opt-out") in plan
    assert not any(isinstance(op, SetConsent) and op.type == "opt-in" for op in plan)


def test_missing_opt_in_is_drift_but_a_missing_withdrawal_is_not():
    p = person()
    state, profile = synced(p)
    del profile.consents[NEWS]
    check = compare_person(CFG, 7, p, state, profile)
    assert [(d.detail["apsis"], d.detail["rules"]) for d in check.drifts] == [("none", "opt-in")]
    assert repair_plan(p, check, state) == [SetConsent("7", *NEWS, "opt-in")]

    state, profile = synced(person(profiles=[]))  # never a member: APSIS holds nothing, nothing to withdraw
    assert compare_person(CFG, 7, person(profiles=[]), state, profile).drifts == []


def test_a_missing_opt_in_is_read_before_it_is_sent_even_where_the_state_lost_the_profile():
    """The export shows the profile; a state that says it does not exist (diff mode reads before a first opt-in
    only for known profiles) sent the repair's opt-in unread, over an opt-out the export may have mis-shown."""
    p = person()
    state, profile = synced(p)
    del profile.consents[NEWS]
    lost = state.model_copy(update={"exists_in_apsis": False})
    repaired = invalidate("acme", compare_person(CFG, 7, p, lost, profile), lost)
    assert repaired is not None and repaired.exists_in_apsis
    assert worth_reading(CFG, repaired) and first_opt_ins([SetConsent("7", *NEWS, "opt-in")], repaired)


def test_tag_drift_both_ways():
    p = person(profiles=[12])
    state, profile = synced(p)
    profile.tags = {"sms-club"}  # newsletter-readers lost, sms-club added behind our back
    check = compare_person(CFG, 7, p, state, profile)
    assert sorted((d.detail["tag"], d.detail["rules"]) for d in check.drifts) == [
        ("newsletter-readers", True),
        ("sms-club", False),
    ]
    assert repair_plan(p, check, state) == [PatchTags("7", {"newsletter-readers": True, "sms-club": False})]


def test_query_tags_are_compared_only_when_the_queries_were_run():
    p = person()
    state, profile = synced(p)
    assert compare_person(CFG, 7, p, state, profile, query_tags=None).drifts == []
    check = compare_person(CFG, 7, p, state, profile, query_tags={"vip"})
    assert [(d.detail["tag"], d.detail.get("query_tag")) for d in check.drifts] == [("vip", True)]
    profile.tags.add("vip")
    check = compare_person(CFG, 7, p, state, profile, query_tags=set())
    assert [(d.detail["tag"], d.detail["rules"]) for d in check.drifts] == [("vip", False)]


def test_orphans_follow_on_delete_and_on_condition_lost():
    state, profile = synced(person())
    # demo: on_delete ignore, on_condition_lost leave -> where the rules want it: a note
    check = compare_person(CFG, 7, None, state, profile)
    assert check.drifts == [] and check.notes[0][0] == "kept_by_policy"

    deleting = CFG.model_copy(update={"on_delete": "delete", "on_condition_lost": "untag"})
    check = compare_person(deleting, 7, None, state, profile)
    assert [(d.category, d.detail["should"]) for d in check.drifts] == [("orphaned", "delete")]
    new = invalidate(deleting.integration_id, check, state.model_copy(update={"exists_in_apsis": False}))
    assert plan_for_delete(new, "delete", managed_tags=CFG.managed_tags()) == [DeleteProfile("7")]

    lost = person(OPENED="0")
    check = compare_person(deleting, 7, lost, state, profile)
    assert [d.detail for d in check.drifts] == [
        {"reason": "no longer matches the sync conditions", "should": "untag", "tags": ["newsletter-readers"]}
    ]
    result = map_person(deleting, lost)
    new = invalidate(deleting.integration_id, check, state.model_copy(update={"tags": {}}))
    assert plan_for_skip(result, new, "untag", managed_tags=CFG.managed_tags()) == [
        PatchTags("7", {"newsletter-readers": False})
    ]


def test_a_profile_we_never_synced_is_reported_but_not_fixed():
    deleting = CFG.model_copy(update={"on_delete": "delete"})
    _, profile = synced(person())
    check = compare_person(deleting, 7, None, None, profile)
    assert [d.fixable for d in check.drifts] == [False]
    assert invalidate(deleting.integration_id, check, None) is None


def test_report_counts_persons_per_category_with_examples_and_round_trips():
    report = DriftReport()
    p = person()
    state, profile = synced(p)
    broken = copy.deepcopy(profile)
    broken.attributes[FIRSTNAME] = "x"
    broken.tags = set()
    report.add(compare_person(CFG, 7, p, state, broken))
    report.add(compare_person(CFG, 8, person(K_CONTACT=8), None, None))
    report.add(compare_person(CFG, 7, p, state, profile))
    assert report.counts == {"missing": 1, "orphaned": 0, "attributes": 1, "consents": 0, "tags": 1}
    assert (report.persons_checked, report.persons_drifting, report.total) == (3, 2, 3)
    assert report.examples["missing"] == [{"person_key": "8", "details": [{}]}]
    assert DriftReport.from_dict(report.to_dict()).to_dict() == report.to_dict()


def test_parse_export_keeps_our_keyspace_and_refuses_an_unreadable_answer():
    payload = {
        "profiles": [
            {
                "keys": {"com.apsis1.keyspaces.crm-id": "7", "com.apsis1.keyspaces.email": "x"},
                "attributes": {FIRSTNAME: "J"},
                "tags": ["sms-club"],
                "topics": [
                    {
                        "topic_discriminator": NEWS[0],
                        "channel_discriminator": "com.apsis1.channels.email",
                        "consent_type": "opt-in",
                    }
                ],
            },
            {"keys": {"com.apsis1.keyspaces.email": "y"}},
        ]
    }
    profiles = parse_export(payload, "com.apsis1.keyspaces.crm-id")
    assert list(profiles) == ["7"]
    assert profiles["7"].consents == {NEWS: "opt-in"} and profiles["7"].tags == {"sms-club"}
    with pytest.raises(ApsisUnavailable, match="no profiles list"):  # never read as an empty section
        parse_export({"items": []}, "com.apsis1.keyspaces.crm-id")


def test_drift_counts_are_published_per_integration_as_emf(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from efficy_sync.reconcile_run import publish_drift_metrics

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    report = DriftReport()
    report.add(compare_person(CFG, 8, person(K_CONTACT=8), None, None))
    publish_drift_metrics("acme-eu", report)
    (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert any("integration_id" in dims for dims in directive["Dimensions"]) and doc["integration_id"] == "acme-eu"
    assert (doc["DriftMissing"], doc["DriftConsents"], doc["DriftPersonsChecked"]) == ([1.0], [0.0], [1.0])
    assert {m["Name"] for m in directive["Metrics"]} >= {"DriftMissing", "DriftOrphaned", "DriftTags"}


def robinson_config() -> Any:
    """One condition on a yes/no field (ROBINSON), and `delete` when it is lost: what reconcile must not guess."""
    from efficy_sync.config import config_from_dict

    return config_from_dict(
        {
            "integration_id": "c",
            "efficy": {"base_url": "https://crm.example.com/crm", "api_key_secret": "x/e", "webhook_secret_secret": "x/w"},
            "apsis": {"base_url": "https://api.example.com", "section": "com.apsis1.sections.default",
                      "credentials_secret": "x/a", "optout_token_secret": "x/o"},
            "sync_conditions": [{"field": "ROBINSON", "not_equals": "1"}],
            "on_condition_lost": "delete",
        }
    )  # fmt: skip


def test_a_yes_no_value_the_conditions_cannot_read_is_not_judged():
    """The sync leaves such a person as they are (no evidence they stopped matching); reconcile called them
    orphaned, "should: delete", a drift that never cleared."""
    from efficy_sync.clients.apsis_export import ExportedProfile
    from efficy_sync.state import PersonState

    cfg = robinson_config()
    record = {"K_CONTACT": 1, "EMAIL1": "a@example.com", "ROBINSON": "Ja", "profiles": []}
    state = PersonState(integration_id="c", person_key="1", exists_in_apsis=True)
    check = compare_person(cfg, 1, record, state, ExportedProfile(key="1"))
    assert check.drifts == [] and [n for n, _ in check.notes] == ["unreadable_conditions"]


@pytest.mark.parametrize("profile", [None, "exists"])
def test_a_record_without_a_condition_field_is_not_judged(profile):
    """The sync refuses such a record (INCOMPLETE_ANSWER: a malformed answer, not a person who fails the
    conditions); reconcile called the person orphaned ("should: delete") or missing on the same evidence."""
    cfg = robinson_config()
    record = {"K_CONTACT": 1, "EMAIL1": "a@example.com", "profiles": []}  # no ROBINSON at all
    state = PersonState(integration_id="c", person_key="1", exists_in_apsis=True)
    check = compare_person(cfg, 1, record, state, ExportedProfile(key="1") if profile else None)
    assert check.drifts == [] and [n for n, _ in check.notes] == ["unreadable_conditions"]


@pytest.mark.parametrize(
    ("held", "sent", "same"),
    [
        ("12.50", 12.5, True),
        ("2024-05-01T00:00:00Z", "2024-05-01", True),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00", True),
        ("32475123456", "+32475123456", True),
        ("3.0", 3, True),
        ("2024-05-02T00:00:00Z", "2024-05-01", False),
        ("12.51", 12.5, False),
        ("32475123457", "+32475123456", False),
        ("Jane", "jane", False),
        # text whose every character counts is not a number or a date because it looks like one
        ("1000", "01000", False),  # a postcode APSIS lost its leading zero on
        ("612345678", "0612345678", False),  # a national phone without its trunk 0
        ("20240105", "2024-01-05", False),  # an eight-digit code
        ("1e3", "1000", False),
        ("-0.5", -0.5, True),
        # a float we mapped, as str() writes it or as APSIS may give it back
        ("1e-05", 1e-05, True),
        ("0.00001", 1e-05, True),
        ("1e+16", 1e16, True),
    ],
)
def test_a_value_apsis_gives_back_in_another_form_is_not_drift(held, sent, same):
    """Compared as text, 12.50 for 12.5 (or a date as midnight UTC, a phone without its "+") was attribute drift
    that never went away: re-sent at every --fix and alarmed by every scheduled check."""
    from efficy_sync.reconcile import _same

    assert _same(held, sent) is same
