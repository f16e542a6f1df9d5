"""Neighbouring integrations of one APSIS One account:

- An Efficy server hosting several customers (`efficy.customer`, the alias sent on every call) holds one CRM per
  customer: K_CONTACT 17 of "acme" and of "globex" are two people. config/neighbours.py named the Efficy
  environment by host and port only, so two customers passed for one CRM feeding two sections (no refusal), and
  two customers in one section were warned about as "already syncs this Efficy".
- Two integrations loading the same persons into two sections of one account, one of them deleting profiles
  (`on_delete` or `on_condition_lost`: delete): APSIS One deletes a profile for the whole account, so one
  integration's delete erased the other's attributes, consents and tags while the other's states still said it
  held them. config apply now refuses that pair."""

from __future__ import annotations

from typing import Any

from efficy_sync.config.neighbours import account_wide_deletes, duplicate_integrations, shared_profiles

from tests.unit.consent_configs import consent_config

SERVER = "https://shared.efficy.cloud/crm"
SECOND = "usercreated.sections.second-b2"


def cfg(integration_id: str, customer: str | None = None, section: str | None = None, **extra: Any):  # type: ignore[no-untyped-def]
    efficy = {
        "base_url": SERVER,
        "api_key_secret": f"efficy-sync/{integration_id}/efficy",
        "webhook_secret_secret": f"efficy-sync/{integration_id}/webhook",
        **({"customer": customer} if customer else {}),
    }
    apsis = {
        "base_url": "https://api.apsis.one",
        "section": section or "com.apsis1.sections.default",
        "keyspace": "com.apsis1.keyspaces.crm-id",
        "credentials_secret": "efficy-sync/shared/apsis",
        "optout_token_secret": f"efficy-sync/{integration_id}/apsis-optout",
    }
    return consent_config(integration_id, efficy=efficy, apsis=apsis, **extra)


def test_two_customers_of_one_efficy_server_into_one_keyspace_are_refused() -> None:
    assert shared_profiles(cfg("globex", "globex", SECOND), [cfg("acme", "acme")])
    assert shared_profiles(cfg("globex", "Globex", SECOND), [cfg("acme", "globex")]) == []  # one customer


def test_two_customers_into_one_section_are_not_called_the_same_crm() -> None:
    assert duplicate_integrations(cfg("globex", "globex"), [cfg("acme", "acme")]) == []
    assert duplicate_integrations(cfg("globex", "acme"), [cfg("acme", "acme")])


def test_a_delete_mode_beside_another_section_of_the_same_persons_is_refused() -> None:
    mine = cfg("a", section=SECOND, on_condition_lost="delete")
    (line,) = account_wide_deletes(mine, [cfg("b")])
    assert "a's on_condition_lost is delete" in line and "every section" in line
    (line,) = account_wide_deletes(cfg("a", section=SECOND), [cfg("b", on_delete="delete")])
    assert "b's on_delete is delete" in line


def test_untag_or_another_crm_or_one_section_is_no_such_clash() -> None:
    assert account_wide_deletes(cfg("a", section=SECOND, on_condition_lost="untag"), [cfg("b")]) == []
    assert account_wide_deletes(cfg("a", on_delete="delete"), [cfg("b")]) == []  # one section: duplicate_integrations
    other_crm = cfg("b", customer="globex")
    assert account_wide_deletes(cfg("a", "acme", section=SECOND, on_delete="delete"), [other_crm]) == []
