"""Whether APSIS One's 404 on a profile's call says the profile is gone, or the integration's section or keyspace.

Every profile call names the integration's section and keyspace in its path, so APSIS answers its own 404 both
for a profile that does not exist and for a section or keyspace this API client no longer has (deleted or
renamed in APSIS, access taken away, a config that names the wrong one). Read as "the profile is gone", the
second reset the person's stored state (what we pushed, the consents we opted in) and planned the person as
new; every try failed on the same 404, and once an admin fixed the section the opt-out of a subscription the
person had left meanwhile was never sent: the state no longer said we had opted them in, so APSIS kept the
opt-in. A delete was recorded as done ("already gone") while the profile stayed.

So "no such profile" is read only once APSIS's documented definition lists show the section and the keyspace;
a list that does not name them makes it the integration's failure (MappingGone: never acknowledged, retried,
alarmed through the DLQ or the run's failure), and a list we cannot read is no evidence (ApsisUnavailable).
"""

from __future__ import annotations

from typing import Any

from efficy_sync.clients.errors import ApsisUnavailable, MappingGone


def _listed(items: list[dict[str, Any]]) -> set[str] | None:
    names = {item.get("discriminator") for item in items}
    return {n for n in names if isinstance(n, str)} if items and all(isinstance(n, str) for n in names) else None


def confirm_scope(client: Any) -> None:
    """Raises unless APSIS lists the client's section and keyspace (two GETs, made only after a 404 on a profile)."""
    missing = []
    for kind, wanted, listing in (
        ("section", client.section, client.list_sections),
        ("keyspace", client.keyspace, client.list_keyspaces),
    ):
        names = _listed(listing())
        if names is None:
            raise ApsisUnavailable(f"APSIS One's {kind} list is empty or unnamed: a 404 on a profile is not judged")
        if wanted not in names:
            missing.append(f"{kind} {wanted}")
    if missing:
        raise MappingGone(
            f"APSIS One answered 404 on a profile, and does not list the integration's {' and '.join(missing)}: "
            "every person would be answered alike; fix apsis.section / apsis.keyspace (or APSIS) and redrive",
            status=404,
        )


def consents_or_gone(client: Any, key: str) -> list[dict[str, Any]] | None:
    """The profile's consents, or None when APSIS answers that the profile does not exist in a section and
    keyspace it still has (clients.apsis.ApsisClient.consents_if_profile, then confirm_scope)."""
    items: list[dict[str, Any]] | None = client.consents_if_profile(key)
    if items is None:
        confirm_scope(client)
    return items
