"""Probe: a mobile number written with the national trunk 0 after the country code ("+32 0470 12 34 56",
"+44 07911 123456", "+49 030 1234567") must not reach APSIS One as a wrong E.164 number.

README (field types): a value that cannot be read one way only is skipped rather than guessed, among them "a
trunk 0 after the country code (`+49 (030) ...`)"; tests/unit/test_values.py says of +490301234567 "is no number".
The real PersonSyncer and ApsisClient against the APSIS One simulator over HTTP, the in-memory state store.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.sync import PersonSyncer
from efficy_sync.values import to_phone
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
CRM = "com.apsis1.keyspaces.crm-id"
MOBILE = "com.apsis1.attributes.mobile"
CFG = config_from_dict(
    {
        "integration_id": "phones",
        "efficy": {"base_url": "https://crm.example.com/crm", "api_key_secret": "x/e", "webhook_secret_secret": "x/w"},
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "field_mappings": [{"efficy": "MOBILE", "apsis": MOBILE, "type": "phone"}],
    }
)


@pytest.fixture
def apsis_sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(client_id="p", client_secret="p-secret", rate_limits=False).start()
    yield sim
    sim.stop()


@pytest.mark.parametrize(
    ("typed", "wrong"),
    [
        ("+32 0470 12 34 56", "+320470123456"),  # Belgian mobile, trunk 0 kept
        ("+44 07911 123456", "+4407911123456"),  # UK mobile, trunk 0 kept
        ("+49 030 1234567", "+490301234567"),  # the README's own example, without the brackets
    ],
)
def test_a_trunk_zero_after_the_country_code_is_not_sent(apsis_sim: ApsisSimulator, typed: str, wrong: str) -> None:
    apsis = ApsisClient(apsis_sim.url, "p", "p-secret", section=CFG.apsis.section, policy=FAST)
    person = {
        "K_CONTACT": 9,
        "NAME": "N",
        "EMAIL1": "n9@example.com",
        "MOBILE": typed,
        "D_CHANGE": "2026-01-01T10:00:00",
    }

    PersonSyncer(CFG, apsis, MemoryPersonStateStore(), email_lookup=lambda a: []).sync(9, person, None)

    sent = (apsis_sim.get_profile(CRM, "9") or {}).get("attributes", {}).get(MOBILE)
    assert sent != wrong, f"{typed!r} reached APSIS One as {sent!r}, a number nobody has"
    assert sent is None  # skipped, as the bracketed "+49 (030)" is: not guessed


@pytest.mark.parametrize(
    ("typed", "number"),
    [
        ("+39 06 1234 5678", "+390612345678"),  # Italy: the 0 is part of the number
        ("+225 07 12 34 56 78", "+2250712345678"),  # Côte d'Ivoire (ten digits since 2021)
        ("0032 470 12 34 56", "+32470123456"),
        ("+1 415 555 0100", "+14155550100"),
        ("+352 621 123 456", "+352621123456"),  # a three-digit code whose number does not start with 0
    ],
)
def test_numbers_that_start_with_0_where_the_country_says_so_are_sent(typed: str, number: str) -> None:
    assert to_phone(typed) == number
