"""Two integrations must not name the same APSIS One profiles from two CRMs (config/neighbours.py)."""

from __future__ import annotations

from typing import Any

from efficy_sync.config.neighbours import shared_profiles

from tests.unit.consent_configs import consent_config


def cfg(integration_id: str, efficy: str, **apsis: Any) -> Any:
    return consent_config(
        integration_id,
        efficy={
            "base_url": efficy,
            "api_key_secret": f"efficy-sync/{integration_id}/efficy",
            "webhook_secret_secret": f"efficy-sync/{integration_id}/webhook",
        },
        apsis={
            "base_url": "https://api.apsis.one",
            "section": "com.apsis1.sections.default",
            "keyspace": "com.apsis1.keyspaces.crm-id",
            "credentials_secret": "efficy-sync/shared/apsis",
            "optout_token_secret": f"efficy-sync/{integration_id}/apsis-optout",
            **apsis,
        },
    )


def test_two_crms_in_one_account_and_keyspace_clash() -> None:
    a = cfg("a", "https://a.efficy.cloud/crm")
    b = cfg("b", "https://b.efficy.cloud/crm", section="usercreated.sections.second-b2")
    (line,) = shared_profiles(b, [a, b])
    assert "'a'" in line and "com.apsis1.keyspaces.crm-id" in line and "a.efficy.cloud" in line


def test_the_same_account_written_with_another_api_address_still_clashes() -> None:
    """The check also compared the APSIS base_url as text: `:443`, another case or another name of the same
    API let two CRMs share one account's profiles."""
    a = cfg("a", "https://a.efficy.cloud/crm")
    for address in ("https://api.apsis.one:443", "https://API.apsis.one/", "http://localhost:44475"):
        b = cfg("b", "https://b.efficy.cloud/crm", base_url=address)
        assert len(shared_profiles(b, [a])) == 1, address


def test_one_crm_into_two_sections_or_a_keyspace_of_its_own_or_another_account_is_fine() -> None:
    a = cfg("a", "https://a.efficy.cloud/crm")
    same_crm = cfg("a2", "https://A.efficy.cloud:443", section="usercreated.sections.second-b2")
    own_keyspace = cfg("b", "https://b.efficy.cloud/crm", keyspace="usercreated.keyspaces.crm-b")
    other_account = cfg("c", "https://c.efficy.cloud/crm", credentials_secret="efficy-sync/c/apsis")
    for other in (same_crm, own_keyspace, other_account):
        assert shared_profiles(other, [a]) == [], other.integration_id


def test_the_same_crm_twice_into_one_section_is_named() -> None:
    """Found by probing: a copy of an integration under another id was applied silently, and its first load
    opted a person in over the opt-out the first one's route had recorded."""
    from efficy_sync.config.neighbours import duplicate_integrations

    a = cfg("a", "https://a.efficy.cloud/crm")
    (line,) = duplicate_integrations(cfg("a2", "https://A.efficy.cloud:443"), [a])
    assert "'a'" in line and "blind to the opt-outs the other records" in line
    assert (
        duplicate_integrations(cfg("a3", "https://a.efficy.cloud/crm", section="usercreated.sections.s-b2"), [a]) == []
    )
    assert duplicate_integrations(a, [a]) == []
