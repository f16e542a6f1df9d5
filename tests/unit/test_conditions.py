"""Sync conditions: each operator, with the reasons `explain` shows."""

from __future__ import annotations

import pytest
from efficy_sync.conditions import evaluate
from efficy_sync.config import SyncCondition


def cond(**kwargs) -> SyncCondition:
    return SyncCondition.model_validate(kwargs)


@pytest.mark.parametrize(
    ("condition", "value", "passed"),
    [
        ({"equals": "1"}, "1", True),
        ({"equals": "1"}, "0", False),
        ({"equals": "1"}, 1, True),  # a number from a client that parsed it
        ({"equals": "1"}, True, True),
        ({"equals": "1"}, " 1 ", True),
        ({"equals": "1"}, None, False),
        ({"not_equals": "1"}, "0", True),
        ({"not_equals": "1"}, "1", False),
        ({"not_equals": "1"}, "", True),
        ({"not_equals": "1"}, None, False),  # null says nothing (README): not let through
        ({"in": ["FR", "NL"]}, "NL", True),
        ({"in": ["FR", "NL"]}, "EN", False),
        ({"in": ["FR", "NL"]}, "fr", False),  # exact, case-sensitive: what the user wrote
        # a yes/no field in another spelling (the connector's REST export may write booleans as words)
        ({"equals": "1"}, "true", True),
        ({"equals": "1"}, "True", True),
        ({"equals": "1"}, "yes", True),
        ({"equals": "1"}, "false", False),
        ({"equals": "true"}, "1", True),
        ({"not_equals": "1"}, "True", False),  # a Robinson-listed person is not let through
        ({"not_equals": "1"}, "Y", False),
        ({"not_equals": "1"}, "false", True),
        ({"not_equals": "0"}, "False", False),
        ({"in": ["1"]}, "on", True),
        ({"equals": "NO"}, "false", False),  # "NO" (a country) is not a yes/no test: compared as written
        ({"equals": "1"}, "truthy", False),
        # a yes/no value that is neither: an exclusion list does not let the person through on a guess
        ({"not_equals": "1"}, "x", False),
        ({"not_equals": "1"}, "Ja", False),
        ({"not_equals": "1"}, "-1", False),  # true in some systems
        ({"not_equals": "1"}, "1.0", False),
        ({"not_equals": "1"}, "01", False),
        ({"not_equals": "1"}, "0.0", True),
        ({"not_equals": "0"}, "x", False),
        ({"equals": "1"}, "1.0", True),
        ({"equals": "0"}, "x", False),
        ({"not_equals": "FR"}, "x", True),  # not a yes/no test: compared as written
        ({"in": [1, 2]}, "2", True),
        ({"is_empty": True}, "", True),
        ({"is_empty": True}, None, True),
        ({"is_empty": True}, "1899-12-30T00:00:00", True),  # Efficy's zero date is an empty date
        ({"is_empty": True}, "x", False),
        ({"is_empty": True}, "0", False),
        ({"not_empty": True}, "x", True),
        ({"not_empty": True}, "0", True),
        ({"not_empty": True}, "  ", False),
        ({"not_empty": True}, "1899-12-30", False),
    ],
)
def test_each_operator(condition, value, passed):
    report = evaluate([cond(field="F", **condition)], {"F": value})
    assert report.passed is passed
    assert report.outcomes[0].passed is passed


def test_missing_field_counts_as_empty_and_says_so():
    report = evaluate([cond(field="ROBINSON", equals="0"), cond(field="NOTE", is_empty=True)], {"OPENED": "1"})
    assert [o.passed for o in report.outcomes] == [False, True]
    assert "missing from the person's data" in report.outcomes[0].reason


def test_failure_reason_names_condition_and_value():
    report = evaluate(
        [cond(field="OPENED", equals="1"), cond(field="ROBINSON", equals="0")], {"OPENED": "1", "ROBINSON": "1"}
    )
    assert not report.passed
    assert report.first_failure is report.outcomes[1]
    assert report.first_failure.reason == "ROBINSON equals '0' failed: value is '1'"
    assert report.outcomes[0].reason == "OPENED equals '1' passed: value is '1'"


def test_every_condition_is_evaluated_even_after_a_failure():
    report = evaluate([cond(field="A", equals="1"), cond(field="B", equals="1")], {"A": "0", "B": "0"})
    assert [o.passed for o in report.outcomes] == [False, False]
    assert report.first_failure.condition.field == "A"


def test_no_conditions_lets_everyone_through():
    report = evaluate([], {})
    assert report.passed
    assert report.first_failure is None


def test_personal_values_are_masked_in_reasons():
    report = evaluate(
        [cond(field="EMAIL1", equals="x@example.com"), cond(field="MOBILE", is_empty=True)],
        {"EMAIL1": "john.doe@example.com", "MOBILE": "+32470000001"},
    )
    reasons = " ".join(o.reason for o in report.outcomes)
    assert "john.doe" not in reasons
    assert "j***@example.com" in reasons
    assert "+32470000001" not in reasons
    assert "+32*****01" in reasons


def test_empty_value_reason():
    report = evaluate([cond(field="OPENED", equals="1")], {"OPENED": ""})
    assert report.first_failure.reason == "OPENED equals '1' failed: value is empty"


@pytest.mark.parametrize(
    ("condition", "value", "passed"),
    [
        # Efficy's JSON-RPC writes numbers as text: a zero fraction, after a point or a decimal comma, is the
        # same whole number, as a JSON 3.0 already was
        ({"not_equals": "3"}, "3.0", False),  # was let through: an excluded status created in APSIS One
        ({"not_equals": "3"}, "3,00", False),
        ({"equals": "5"}, "5.0", True),  # failed: on_condition_lost deleted the person
        ({"equals": "5"}, "5,0", True),
        ({"in": ["1", "2"]}, "2,0", True),
        ({"equals": "5.0"}, "5", True),
        # not the same number, or not surely: a code with a leading zero, a fraction, a thousands group
        ({"equals": "5"}, "05", False),
        ({"not_equals": "3"}, "03", True),
        ({"equals": "5"}, "5.5", False),
        ({"equals": "2"}, "2.000", False),
    ],
)
def test_a_whole_number_in_another_spelling_is_the_same_number(condition, value, passed):
    report = evaluate([cond(field="STATUS", **condition)], {"STATUS": value})
    assert report.passed is passed
