"""From an Efficy person to the desired APSIS One state, or to a skip naming the failed condition."""

from __future__ import annotations

from pathlib import Path

import pytest
from efficy_sync.config import load_config_file
from efficy_sync.mapping import Desired, Skip, map_person, profile_ids, profile_key_of

CFG = load_config_file(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")

EMAIL = "com.apsis1.attributes.email"
CRMID = "com.apsis1.attributes.crmid"
MOBILE = "com.apsis1.attributes.mobile"
NEWS = ("usercreated.topics.newsletter-ab12", "email")
SMS = ("usercreated.topics.sms-offers-cd34", "sms")
EVENTS = ("usercreated.topics.events-ef56", "email")


def person(**changes) -> dict:
    base = {
        "K_CONTACT": 1,
        "NAME": "Doe",
        "FIRSTNAME": "Jo",
        "EMAIL1": "Jo@Example.com",
        "MOBILE": "+32 470 00 00 01",
        "LANGUAGE": "FR",
        "OPENED": "1",
        "ROBINSON": "0",
        "profiles": [12, 13],
        "D_CHANGE": "2024-05-01T10:00:00",
    }
    base.update(changes)
    return base


def desired(**changes) -> Desired:
    result = map_person(CFG, person(**changes))
    assert isinstance(result, Desired), result
    return result


def test_a_matching_person_maps_to_attributes_consents_and_tags():
    d = map_person(CFG, person(), query_tags={"vip"})
    assert d == Desired(
        profile_key="1",
        attributes={
            EMAIL: "Jo@example.com",
            CRMID: "1",
            "com.apsis1.attributes.firstname": "Jo",
            "com.apsis1.attributes.lastname": "Doe",
            MOBILE: "+32470000001",
            "usercreated.attributes.language": "FR",
        },
        consents={NEWS: "opt-in", SMS: "opt-in", EVENTS: "opt-out"},
        tags={"newsletter-readers": True, "sms-club": True, "vip": True},
        email="Jo@example.com",
        mobile="+32470000001",
        change_stamp="2024-05-01T10:00:00",
        skipped_fields=[],
        integration_id="demo",
        memberships={NEWS: True, SMS: True, EVENTS: False},
        crm_profiles={NEWS: 12, SMS: 13, EVENTS: 14},
        skipped_attributes=frozenset(),
    )


def test_failing_condition_gives_a_skip_naming_it():
    result = map_person(CFG, person(ROBINSON="1"))
    assert isinstance(result, Skip)
    assert result.reason == "ROBINSON equals '0' failed: value is '1'"
    assert result.condition is CFG.sync_conditions[1]
    assert (result.profile_key, result.change_stamp, result.integration_id) == ("1", "2024-05-01T10:00:00", "demo")


def test_the_first_failing_condition_is_named():
    result = map_person(CFG, person(OPENED="0", ROBINSON="1"))
    assert isinstance(result, Skip)
    assert result.condition.field == "OPENED"


@pytest.mark.parametrize("key", [None, "", "abc", 0, -4, 1.5])
def test_a_person_without_a_usable_key_is_skipped(key):
    result = map_person(CFG, person(K_CONTACT=key))
    assert isinstance(result, Skip)
    assert result.condition is None
    assert "K_CONTACT" in result.reason


@pytest.mark.parametrize(("raw", "key"), [(123, "123"), (123.0, "123"), ("123", "123"), (" 7 ", "7")])
def test_profile_key_is_k_contact_as_text(raw, key):
    assert profile_key_of(raw) == key


def test_profile_ids_accept_numbers_text_and_detail_rows():
    assert profile_ids([12, "13", 14.0, {"K_PROFILE": 15}, {"k_profile": "16.0"}]) == {12, 13, 14, 15, 16}
    assert profile_ids([]) == set()
    assert profile_ids(None) is None


@pytest.mark.parametrize("bad", ["x", "12_865114542", None, "", {"NAME": "News"}, 12.5, "1e3", True])
def test_one_unreadable_profile_entry_makes_the_membership_unknown(bad):
    """Dropping it would read the person as a member of fewer profiles, and opt them out of those."""
    assert profile_ids([12, bad]) is None


@pytest.mark.parametrize("raw", ["12_3", "1e3", "nan", "inf", "-4", "0", True, 12.5, None, ""])
def test_profile_key_refuses_what_is_not_a_record_key(raw):
    assert profile_key_of(raw) is None


def test_person_without_valid_email_still_maps_but_email_opt_ins_are_skipped():
    d = desired(EMAIL1="not-an-address")
    assert d.email is None
    assert EMAIL not in d.attributes
    assert EMAIL in d.skipped_attributes
    assert ("EMAIL1", "not a valid e-mail address") in d.skipped_fields
    assert ("consent usercreated.topics.newsletter-ab12 (email)", "missing e-mail") in d.skipped_fields
    assert NEWS not in d.consents
    assert d.consents[SMS] == "opt-in"  # the sms channel does not need the e-mail


def test_a_withdrawal_is_never_held_back_for_lack_of_an_address():
    d = desired(EMAIL1="", profiles=[13])
    assert d.attributes[EMAIL] is None  # empty: clear it
    assert d.consents[NEWS] == "opt-out"  # diff sends it only if an opt-in was pushed before


def test_sms_opt_in_needs_a_valid_mobile():
    d = desired(MOBILE="0470 00 00 01")
    assert d.mobile is None
    assert MOBILE in d.skipped_attributes
    assert ("MOBILE", "not an international phone number (+ and 8-15 digits)") in d.skipped_fields
    assert ("consent usercreated.topics.sms-offers-cd34 (sms)", "missing mobile number") in d.skipped_fields
    assert SMS not in d.consents
    assert d.consents[NEWS] == "opt-in"


def test_profile_tags_mirror_membership():
    d = desired(profiles=[12])
    assert d.tags == {"newsletter-readers": True, "sms-club": False}


def test_query_tags_only_when_known_and_only_true():
    assert "vip" not in desired().tags  # unknown: left alone
    assert "vip" not in map_person(CFG, person(), query_tags=set()).tags  # not in the query: untouched
    assert map_person(CFG, person(), query_tags={"vip", "not-configured"}).tags == {
        "newsletter-readers": True,
        "sms-club": True,
        "vip": True,
    }


def test_unknown_profiles_leave_consents_and_profile_tags_alone():
    data = person()
    del data["profiles"]
    d = map_person(CFG, data)
    assert d.consents == {} and d.memberships == {} and d.tags == {}
    assert any(f == "profiles" for f, _ in d.skipped_fields)


def test_empty_value_clears_but_missing_field_is_left_alone():
    data = person(FIRSTNAME="")
    del data["LANGUAGE"]
    d = map_person(CFG, data)
    assert d.attributes["com.apsis1.attributes.firstname"] is None
    assert "usercreated.attributes.language" not in d.attributes
    assert "usercreated.attributes.language" in d.skipped_attributes
    assert ("LANGUAGE", "not present in the Efficy data") in d.skipped_fields


def test_typed_mappings_convert_values():
    from efficy_sync.config import config_from_dict, config_to_dict

    data = config_to_dict(CFG)
    data["field_mappings"] += [
        {"efficy": "F_NEWS", "apsis": "usercreated.attributes.news", "type": "bool"},
        {"efficy": "F_AGE", "apsis": "usercreated.attributes.age", "type": "int"},
        {"efficy": "F_SINCE", "apsis": "usercreated.attributes.since", "type": "date"},
        {"efficy": "F_SCORE", "apsis": "usercreated.attributes.score", "type": "float"},
    ]
    cfg = config_from_dict(data)
    d = map_person(cfg, person(F_NEWS="1", F_AGE="42", F_SINCE="1899-12-30T00:00:00", F_SCORE="3,5"))
    assert d.attributes["usercreated.attributes.news"] is True
    assert d.attributes["usercreated.attributes.age"] == 42
    assert d.attributes["usercreated.attributes.since"] is None
    assert d.attributes["usercreated.attributes.score"] == 3.5
