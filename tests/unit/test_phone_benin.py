"""values.to_phone skips a number with a 0 right after its country code as "a trunk 0 kept", except in the
countries whose numbers start with 0. Benin (+229) moved to ten-digit numbers that start with 01 in November 2024
(+229 01 97 12 34 56): it was missing from that list, and every Beninese number was skipped (no mobile in APSIS
One, no usable SMS channel)."""

from __future__ import annotations

from efficy_sync.values import to_phone


def test_a_beninese_number_in_its_ten_digit_form_is_sent() -> None:
    assert to_phone("+229 01 97 12 34 56") == "+2290197123456"
