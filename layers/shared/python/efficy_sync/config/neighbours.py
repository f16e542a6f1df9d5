"""Rules between the integrations of one stack, checked when a config is applied (`config apply`).

APSIS One keeps profiles per account, not per section (contracts/apsis-one.md): two integrations that write
the same keyspace of the same account name a profile by the same key. From two Efficy environments, key 17 is
two different people, who would become one profile: one CRM's attributes overwrite the other's, and one CRM's
delete or opt-out reaches the other's person. Only a shared credentials secret proves a shared account
(every account has the same API address), so that is what is refused; the README names the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .model import IntegrationConfig


def _efficy(cfg: IntegrationConfig) -> str:
    """The Efficy environment, by its host and customer: `https://acme.efficy.cloud` and `.../crm` are one CRM (a
    refusal needs certainty; two environments behind one host with different paths are left to the README's
    rule), but a server hosting several customers (`efficy.customer`, the alias sent on every call) holds one CRM
    per customer: person 17 of one is not person 17 of the other."""
    parts = urlsplit(str(cfg.efficy.base_url))
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    except ValueError:
        port = None
    customer = (cfg.efficy.customer or "").strip().lower()
    return f"{host}:{port}" + (f" (customer {customer})" if customer else "")


def account_wide_deletes(cfg: IntegrationConfig, others: Iterable[IntegrationConfig]) -> list[str]:
    """One line per other integration that loads the same persons (same CRM, keyspace and account) into another
    section, when either of the two deletes profiles (`on_delete` or `on_condition_lost`: delete). APSIS One
    deletes a profile for the whole account, every section's attributes, consents and tags with it, while the
    other integration's states still say it holds them: it sends nothing, and the person stays out of its section."""
    clashes = []
    for other in others:
        if other.integration_id == cfg.integration_id or other.apsis.section == cfg.apsis.section:
            continue
        same_persons = (
            other.apsis.credentials_secret == cfg.apsis.credentials_secret
            and other.apsis.keyspace == cfg.apsis.keyspace
            and _efficy(other) == _efficy(cfg)
        )
        deleting = [
            f"{who}'s {name}"
            for who, c in ((cfg.integration_id, cfg), (other.integration_id, other))
            for name, value in (("on_delete", c.on_delete), ("on_condition_lost", c.on_condition_lost))
            if value == "delete"
        ]
        if same_persons and deleting:
            clashes.append(
                f"integration {other.integration_id!r} loads the same persons into section {other.apsis.section} "
                f"of this account; {', '.join(deleting)} is delete, and APSIS One deletes a profile from every "
                "section: use untag (or leave, ignore) in both, or one integration per account"
            )
    return clashes


def shared_profiles(cfg: IntegrationConfig, others: Iterable[IntegrationConfig]) -> list[str]:
    """One line per other integration whose persons would share APSIS One profiles with `cfg`'s."""
    clashes = []
    for other in others:
        if other.integration_id == cfg.integration_id:
            continue
        # the secret names the account; its API address does not (the same API, written with a port, in
        # another case or through another hostname, passed a comparison of the addresses)
        same_account = other.apsis.credentials_secret == cfg.apsis.credentials_secret
        if same_account and other.apsis.keyspace == cfg.apsis.keyspace and _efficy(other) != _efficy(cfg):
            clashes.append(
                f"integration {other.integration_id!r} writes keyspace {cfg.apsis.keyspace} of the same APSIS One "
                f"account (credentials {cfg.apsis.credentials_secret!r}) from another Efficy ({_efficy(other)}): "
                "the two CRMs' person keys would name the same profiles"
            )
    return clashes


def duplicate_integrations(cfg: IntegrationConfig, others: Iterable[IntegrationConfig]) -> list[str]:
    """One line per other integration that syncs the same CRM into the same keyspace and section of the same
    account: each records the opt-outs its own route receives and reads APSIS only before its own first opt-in,
    so one would opt persons in over the other's opt-outs. A warning, not a refusal: moving an integration to a
    new id passes through this state."""
    return [
        f"integration {other.integration_id!r} already syncs this Efficy ({_efficy(other)}) into keyspace "
        f"{cfg.apsis.keyspace} and section {cfg.apsis.section} of the same APSIS One account: the two would send "
        "the same persons' consents, each blind to the opt-outs the other records; keep one of them (or set "
        "apsis.existing_optouts: always on both)"
        for other in others
        if other.integration_id != cfg.integration_id
        and other.apsis.credentials_secret == cfg.apsis.credentials_secret
        and (other.apsis.keyspace, other.apsis.section) == (cfg.apsis.keyspace, cfg.apsis.section)
        and _efficy(other) == _efficy(cfg)
    ]
