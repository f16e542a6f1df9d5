"""Conversions of values as Efficy sends them."""

from __future__ import annotations

import pytest
from efficy_sync.values import (
    Skipped,
    as_text,
    convert,
    is_empty_value,
    is_zero_date,
    to_bool,
    to_date,
    to_datetime,
    to_email,
    to_float,
    to_int,
    to_phone,
    to_string,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("0", False), ("true", True), ("FALSE", False), (" 1 ", True), (True, True), (0, False)],
)
def test_booleans_as_efficy_sends_them(raw, expected):
    assert to_bool(raw) is expected


@pytest.mark.parametrize("raw", ["", None, "   "])
def test_empty_boolean_clears(raw):
    assert to_bool(raw) is None


@pytest.mark.parametrize("raw", ["2", "maybe", 2])
def test_other_booleans_are_skipped(raw):
    assert isinstance(to_bool(raw), Skipped)


@pytest.mark.parametrize(("raw", "expected"), [("42", 42), (" 42 ", 42), ("42.0", 42), (42, 42), ("-3", -3), (7.0, 7)])
def test_integers_from_strings(raw, expected):
    assert to_int(raw) == expected


@pytest.mark.parametrize("raw", ["4.5", "abc", "inf", "nan", "1,000", "1.000", "2.500.000", "-12,345"])
def test_non_integers_are_skipped(raw):  # "1,000" was read as 1: a thousands separator or a decimal one
    assert isinstance(to_int(raw), Skipped)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("3.25", 3.25), ("3,25", 3.25), ("10", 10.0), (2, 2.0), ("-0.5", -0.5), ("0,125", 0.125), ("1000.5", 1000.5)],
)
def test_floats_from_strings_with_decimal_point_or_comma(raw, expected):
    assert to_float(raw) == expected


@pytest.mark.parametrize("raw", ["1,234.5.6", "x", "nan", "inf", True, "1,000", "1.250"])
def test_bad_floats_are_skipped(raw):
    assert isinstance(to_float(raw), Skipped)


def test_empty_numbers_clear():
    assert to_int("") is None
    assert to_float(None) is None


@pytest.mark.parametrize(
    "raw", ["1899-12-30T00:00:00", "1899-12-30", "1899-12-30 08:00:00", "30/12/1899 08:00", "", None]
)
def test_zero_date_means_empty(raw):
    assert to_date(raw) is None
    assert to_datetime(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T10:11:12", "2024-05-01"),
        ("2024-05-01", "2024-05-01"),
        ("2024-05-01 23:59:59", "2024-05-01"),
        ("01/05/2024", "2024-05-01"),
        ("1/5/2024 10:00", "2024-05-01"),
        ("2024-05-01T00:00:00Z", "2024-05-01"),  # midnight where the offset says: that day
        ("1985-06-16T00:00:00+02:00", "1985-06-16"),
    ],
)
def test_dates_become_iso(raw, expected):
    assert to_date(raw) == expected


def test_datetimes_keep_time_and_offset():
    assert to_datetime("2024-05-01 10:11:12") == "2024-05-01T10:11:12"
    assert to_datetime("2024-05-01T10:11:12Z") == "2024-05-01T10:11:12+00:00"
    assert to_datetime("31/12/2024 08:30") == "2024-12-31T08:30:00"


@pytest.mark.parametrize(
    "raw", ["yesterday", "2024-13-01", "32/01/2024", "1985-06-15T22:00:00Z", "1985-06-15T23:00:00+01:00"]
)
def test_bad_dates_are_skipped(raw):
    assert isinstance(to_date(raw), Skipped)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+32470000001", "+32470000001"),
        ("+32 470 00 00 01", "+32470000001"),
        ("0032 470.00.00.01", "+32470000001"),
        ("+32 (0)470-00-00-01", "+32470000001"),
        ("+1 (555) 010-9999", "+15550109999"),
        ("+46 8 123 456", "+468123456"),
        ("+32 2/123 45 67", "+3221234567"),  # Belgian notation: the slash separates the zone
        ("+32 470/12.34.56", "+32470123456"),
    ],
)
def test_international_phone_numbers(raw, expected):
    assert to_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "0470 00 00 01",
        "470000001",
        "+3247",
        "+1234567890123456",
        "+32 470 ab",
        "call me",
        "+32 2 123 45 67/68",  # two numbers: +322123456768 reached somebody else
        "+32 470 00 00 01, +32 2 111 22 33",
        "+49 (030) 1234567",  # the trunk 0 kept: +490301234567 is no number
        "+0032470000001",  # no country code starts with 0
    ],
)
def test_national_or_malformed_phone_numbers_are_skipped(raw):
    result = to_phone(raw)
    assert isinstance(result, Skipped)
    assert "international" in result.reason


@pytest.mark.parametrize("raw", ["+32470123456.0", "+32470123456,00", "0032470123456.0"])
def test_a_phone_number_written_as_a_decimal_is_skipped_not_given_another_last_digit(raw):
    """Stripped of its dot as a separator, "+32470123456.0" was sent as +324701234560: somebody else's number."""
    result = to_phone(raw)
    assert isinstance(result, Skipped) and "decimal" in result.reason
    assert to_phone(32470123456.0) != "+324701234560"


def test_skip_reasons_do_not_quote_personal_values():
    assert "0470" not in to_phone("0470 00 00 01").reason
    assert "jo" not in to_email("jo@@example.com").reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jo.Doe@Example.COM", "Jo.Doe@example.com"),
        (" jo+news@sub.example.co.uk ", "jo+news@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_valid_emails_get_a_lower_case_domain(raw, expected):
    assert to_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "jo",
        "jo@",
        "@example.com",
        "jo@example",
        "jo@@example.com",
        "jo doe@example.com",
        "jo..doe@example.com",
        ".jo@example.com",
        "jo@-example.com",
        "jo@example.c",
        "a" * 65 + "@example.com",
    ],
)
def test_invalid_emails_are_skipped(raw):
    assert isinstance(to_email(raw), Skipped)


def test_strings_are_trimmed_and_empty_clears():
    assert to_string("  Jo ") == "Jo"
    assert to_string("") is None
    assert to_string(12) == "12"
    assert to_string("1899-12-30T00:00:00") is None


def test_convert_dispatches_by_type_and_rejects_unknown_types():
    assert convert("1", "bool") is True
    assert convert("12", "int") == 12
    assert convert("0032470000001", "phone") == "+32470000001"
    with pytest.raises(ValueError, match="unknown value type"):
        convert("1", "money")


def test_as_text_matches_efficy_text_forms():
    assert as_text(True) == "1"
    assert as_text(False) == "0"
    assert as_text(2.0) == "2"
    assert as_text(2.5) == "2.5"
    assert as_text(None) == ""
    assert as_text(" x ") == "x"


def test_empty_values():
    assert is_empty_value(None)
    assert is_empty_value(" ")
    assert is_empty_value("1899-12-30T00:00:00")
    assert not is_empty_value("0")
    assert is_zero_date("30/12/1899")
    assert not is_zero_date("2024-01-01")


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("jane@müller.de", "jane@xn--mller-kva.de"),
        ("Jane@MÜLLER.de", "Jane@xn--mller-kva.de"),
        ("jane@straße.de", "jane@xn--strae-oqa.de"),  # IDNA 2008: ß is kept (2003 made it strasse.de, another domain)
        ("jane@xn--mller-kva.de", "jane@xn--mller-kva.de"),
    ],
)
def test_an_internationalised_domain_is_sent_in_its_ascii_form(given: str, sent: str) -> None:
    """It was "not a valid e-mail address": the person had no address in APSIS and no e-mail consent at all."""
    from efficy_sync.values import to_email

    assert to_email(given) == sent


def test_a_mailbox_beyond_ascii_is_still_refused() -> None:
    from efficy_sync.values import Skipped, to_email

    assert isinstance(to_email("jöe@example.de"), Skipped)


@pytest.mark.parametrize("value_type", ["string", "int", "float", "bool", "date", "datetime", "phone", "email"])
@pytest.mark.parametrize("raw", [{"key": 2, "value": "NL"}, ["A", "B"]])
def test_an_object_or_a_list_is_no_value_of_any_type(raw, value_type):
    result = convert(raw, value_type)  # "{'key': 2, 'value': 'NL'}" was sent as the attribute's text
    assert isinstance(result, Skipped) and "single value" in result.reason


@pytest.mark.parametrize(
    "raw", ["30.12.1899", "30.12.1899 00:00:00", "1899/12/30", "1899/12/30 08:00", "30-12-1899", "30-12-1899 00:00:00"]
)
def test_the_zero_date_in_every_form_day_first_reads_is_empty_not_sent(raw):
    """day_first reads dots and year-first slashes: Efficy's empty date in those forms was sent as 1899-12-30."""
    assert is_empty_value(raw)
    assert to_date(raw) is None and to_datetime(raw) is None
    assert to_date("30.12.2025") == "2025-12-30" and not is_zero_date("30.12.18990")
    assert to_date("30-12-2025") == "2025-12-30"
