"""An `int` field mapping must send the number Efficy holds, or skip it: never a neighbouring number
(values.py: "a value that cannot be converted is not guessed at")."""

from __future__ import annotations

import pytest
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import Desired, map_person
from efficy_sync.values import Skipped, to_int

CFG = config_from_dict(
    {
        "integration_id": "ints",
        "efficy": {"base_url": "https://crm.example.com/crm", "api_key_secret": "x/e", "webhook_secret_secret": "x/w"},
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "field_mappings": [{"efficy": "CUSTNO", "apsis": "usercreated.attributes.customer-number", "type": "int"}],
    }
)


@pytest.mark.parametrize("text", ["12345678901234567", "9007199254740993", "123456789012345678901"])
def test_a_large_whole_number_sent_as_text_is_sent_exactly_or_skipped(text: str) -> None:
    # Efficy sends numbers as text; this one is a whole number beyond 2**53
    result = to_int(text)
    assert isinstance(result, Skipped) or result == int(text), f"{text} became {result}"

    desired = map_person(CFG, {"K_CONTACT": 7, "EMAIL1": "a@example.com", "CUSTNO": text, "D_CHANGE": ""})
    assert isinstance(desired, Desired)
    sent = desired.attributes.get("usercreated.attributes.customer-number")
    assert sent is None or sent == int(text), f"APSIS One would be sent {sent} for {text}"


@pytest.mark.parametrize("text", ["1_000", "1e3", "0x10", "12.5"])
def test_text_python_reads_as_a_number_but_efficy_never_writes_is_no_whole_number(text: str) -> None:
    assert isinstance(to_int(text), Skipped)
