"""A person's CRM-profile rows as memberships (efficy_sync.profile_rows): a row of a profile the person left,
read as a membership, would opt them back in, so a row that carries a status nobody said how to read makes
the memberships unknown, and a configured status column says in or out."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.config import ConfigError, ProfileRowStatus, config_from_dict
from efficy_sync.mapping import Desired, map_person, profile_ids
from efficy_sync.profile_rows import NOT_LOADED, PROFILES_UNREAD, Unreadable, memberships, report_unread

from tests.unit.consent_configs import consent_config

STATUS = ProfileRowStatus(field="status")
RAW: dict[str, Any] = consent_config("rows").model_dump()
RAW["tags"] = {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}]}


def test_plain_rows_and_ids_are_memberships() -> None:
    assert memberships([{"K_PROFILE": 12, "NAME": "News"}, 13, {"k_profile": "14"}]) == {12, 13, 14}
    assert memberships([{"K_PROFILE": 12, "STATUS": "opt-in"}], STATUS) == {12}


@pytest.mark.parametrize("column", ["STATUS", "status", "OptOut", "D_OPTOUT", "CONSENT"])
def test_a_status_like_column_nobody_configured_makes_membership_unknown(column: str) -> None:
    rows = [{"K_PROFILE": 12, "NAME": "News"}, {"K_PROFILE": 13, column: "opt-out"}]
    with pytest.raises(Unreadable) as caught:
        memberships(rows)
    assert column.upper() in caught.value.reason and "opt-out" not in caught.value.reason  # names, never values
    assert profile_ids(rows) is None


@pytest.mark.parametrize(
    ("value", "member"),
    [("opt-in", True), (" Opt-In ", True), ("1", True), (1, True), ("opt-out", False), ("0", False), (False, False)],
)
def test_a_configured_status_column_says_in_or_out(value: Any, member: bool) -> None:
    rows = [{"K_PROFILE": 12, "STATUS": "opt-in"}, {"K_PROFILE": 13, "Status": value}]
    assert memberships(rows, STATUS) == ({12, 13} if member else {12})


@pytest.mark.parametrize("value", ["pending", "", None, "1899-12-30T00:00:00"])
def test_a_status_value_not_listed_is_unknown_never_a_guess(value: Any) -> None:
    with pytest.raises(Unreadable):
        memberships([{"K_PROFILE": 12, "STATUS": "opt-in"}, {"K_PROFILE": 13, "STATUS": value}], STATUS)
    with pytest.raises(Unreadable):  # the configured column missing from a row
        memberships([{"K_PROFILE": 12, "NAME": "News"}], STATUS)


def test_a_date_column_whose_empty_value_is_the_only_in() -> None:
    status = ProfileRowStatus(field="D_OPTOUT", member=[""], not_member=["x"], other_values="not_member")
    rows = [
        {"K_PROFILE": 12, "D_OPTOUT": "1899-12-30T00:00:00"},
        {"K_PROFILE": 13, "D_OPTOUT": ""},
        {"K_PROFILE": 14, "D_OPTOUT": "2026-11-30T10:00:00"},
    ]
    assert memberships(rows, status) == {12, 13}


def test_the_setting_is_checked_when_a_config_is_loaded() -> None:
    efficy = {**RAW["efficy"], "profile_status": {"field": "status", "member": ["In", 1], "not_member": ["out"]}}
    cfg = config_from_dict({**RAW, "efficy": efficy})
    assert cfg.efficy.profile_status.field == "STATUS" and cfg.efficy.profile_status.member == ["in", "1"]
    assert config_from_dict(RAW).efficy.profile_status.field is None
    for bad in ({"member": ["in"], "not_member": ["IN"]}, {"member": "in"}, {"member": []}, {"field": "a b"}):
        with pytest.raises(ConfigError):
            config_from_dict({**RAW, "efficy": {**RAW["efficy"], "profile_status": bad}})


def test_the_reason_reaches_the_mapping_and_nothing_is_opted_in_or_out() -> None:
    cfg = config_from_dict(RAW)
    person = {
        "K_CONTACT": 7,
        "EMAIL1": "p7@example.com",
        "MOBILE": "+32470000001",
        PROFILES_UNREAD: "rows carry STATUS",
    }
    desired = map_person(cfg, person)
    assert isinstance(desired, Desired)
    assert desired.consents == {} and desired.tags == {}
    assert ("profiles", "rows carry STATUS") in desired.skipped_fields
    person.pop(PROFILES_UNREAD)
    assert ("profiles", NOT_LOADED) in map_person(cfg, person).skipped_fields  # type: ignore[union-attr]


def test_rows_kept_as_history_that_say_in_and_out_of_one_profile_are_unknown() -> None:
    """Joined, left, joined again: nothing says which row is the latest, so neither verdict is taken."""
    history = [{"K_PROFILE": 12, "STATUS": "opt-in"}, {"K_PROFILE": 12, "STATUS": "opt-out"}]
    for rows in (history, history[::-1]):
        with pytest.raises(Unreadable, match="both in and out"):
            memberships(rows, STATUS)
    same = [{"K_PROFILE": 12, "STATUS": "opt-out"}, {"K_PROFILE": 12, "STATUS": "0"}, 13, "13"]
    assert memberships(same, STATUS) == {13}


def test_persons_whose_rows_could_not_be_read_are_counted_and_logged_without_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import json

    from efficy_sync import observability

    counted: list[tuple[str, float]] = []
    monkeypatch.setattr(observability, "count", lambda name, value=1, **_: counted.append((name, value)))
    stream = io.StringIO()
    monkeypatch.setattr(observability.logger.registered_handler, "stream", stream)
    reason = "CRM profile rows carry STATUS, which efficy.profile_status does not say how to read"
    persons = [{"K_CONTACT": 7, "EMAIL1": "p7@example.com", PROFILES_UNREAD: reason}, {"K_CONTACT": 8, "profiles": []}]
    report_unread(persons)
    report_unread(persons[1:])  # nothing unread: nothing said
    assert counted == [("CrmProfilesUnread", 1)]
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["persons"], line["reason"]) == (1, reason)
    assert "p7@example.com" not in stream.getvalue() and '"7"' not in stream.getvalue()
