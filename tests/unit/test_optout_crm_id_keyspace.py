"""`profile.crm_id` (the crm-id keyspace's key) is our K_CONTACT only when the integration keys its profiles in the
crm-id keyspace. An integration with its own keyspace (`apsis.keyspace`) never writes the crm-id: one APSIS holds
there is another system's id (another CRM's connector in the same account). Read as a K_CONTACT it named another
Efficy person, whom the write-back took out of a CRM profile; beside our own key it refused the call as naming two
persons (400: the opt-out lost, the node does not resend)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from efficy_sync.optout_event import OptOutPayloadError, parse_fields

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OWN = "usercreated.keyspaces.efficy"
EVENT = {"event": "email.unsubscribe", "topic_discriminator": "news"}


def test_with_its_own_keyspace_our_key_finds_the_person_whatever_crm_id_apsis_holds() -> None:
    body = {**EVENT, "profile_key": "42", "keyspace_discriminator": OWN, "profile": {"crm_id": "9001"}}
    assert parse_fields(body, now=lambda: NOW, keyspace=OWN).profile_key == 42


def test_with_its_own_keyspace_a_crm_id_alone_names_nobody_of_ours() -> None:
    body = {**EVENT, "profile": {"crm_id": "9001", "email": "jo@example.com"}}
    event = parse_fields(body, now=lambda: NOW, keyspace=OWN)
    assert event.profile_key is None and event.email == "jo@example.com"  # the address finds the person
    with pytest.raises(OptOutPayloadError):
        parse_fields({**EVENT, "profile": {"crm_id": "9001"}}, now=lambda: NOW, keyspace=OWN)


def test_in_the_crm_id_keyspace_the_crm_id_is_still_the_k_contact() -> None:
    crm = "com.apsis1.keyspaces.crm-id"
    assert parse_fields({**EVENT, "profile": {"crm_id": "42"}}, now=lambda: NOW, keyspace=crm).profile_key == 42
    assert parse_fields({**EVENT, "profile": {"crm_id": "42"}}, now=lambda: NOW).profile_key == 42  # not known
    with pytest.raises(OptOutPayloadError):  # two persons named: evidence for neither
        parse_fields({**EVENT, "profile_key": "7", "profile": {"crm_id": "42"}}, now=lambda: NOW, keyspace=crm)
