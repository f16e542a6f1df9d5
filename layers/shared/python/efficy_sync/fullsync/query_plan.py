"""Query tags that travel with each person in diff mode: the Plan step runs each mapped query once and stores
its members beside the page descriptors; each page gives a member its query tags in the person's own tag call.

Why: the Tags step (tags.py) used to tag every query member after the pages, one tag PATCH, one read and one
state write per member: on a first load a second pass over the tagged persons, and most of what a page had
already sent them. Now a member's query tag goes out with the person (mapping.map_person `query_tags`), the
stored state knows it, and the Tags step finds nothing left to add. The Tags step still runs each query again at
the end and stays the authority: it untags former members (behind the blast-radius breaker), tags persons who
joined a query during the run, and stores the member snapshot. Pages only ever ADD a query tag (map_person
never untags from `query_tags`), so a stale plan costs at most one tag the Tags step then takes away.

A query whose run fails here (deleted in Efficy, an outage) or that is larger than MAX_MEMBERS is left out of the
plan: its members are tagged by the Tags step, as before, and a page never holds a huge set in memory.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol

from ..clients.errors import ApiError
from ..config import IntegrationConfig
from ..store import protocols
from ..store.query_members import decode_members, encode_members
from .tags import widen_snapshot

#: members of one query shipped to the pages at most (a set of this many keys is about 30 MB in a page worker)
MAX_MEMBERS = 500_000


class JsonPlans(Protocol):
    def put(self, key: str, descriptors: list[dict[str, Any]]) -> None: ...

    def get(self, key: str) -> list[dict[str, Any]] | None: ...


def members_key(integration_id: str, run_id: str) -> str:
    return f"plans/{integration_id}/{run_id}-query-members.json"


def plan_query_members(cfg: IntegrationConfig, run_query: Callable[[int], list[int]]) -> list[dict[str, Any]]:
    """[{"tag", "query", "members": base64 of store.query_members' encoding}] for each query that answered."""
    planned = []
    for query_tag in cfg.tags.queries:
        try:
            members = run_query(query_tag.query)
        except ApiError:
            continue  # the Tags step runs it again and decides (an error there is reported or fails the step)
        if len(members) > MAX_MEMBERS:
            continue
        encoded = base64.b64encode(encode_members(members)).decode()
        planned.append({"tag": query_tag.tag, "query": query_tag.query, "members": encoded})
    return planned


def decode_plan(planned: list[dict[str, Any]] | None) -> dict[str, set[int]]:
    """tag -> members, from what plan_query_members stored (an absent plan: nothing known)."""
    return {p["tag"]: decode_members(base64.b64decode(p["members"])) for p in planned or []}


def tags_of(members: dict[str, set[int]]) -> Callable[[int], set[str]] | None:
    """The query tags whose planned members include a person, or None when no query was planned (then query
    tags are left out of the person's mapping, as map_person does for an unknown membership)."""
    if not members:
        return None
    return lambda key: {tag for tag, keys in members.items() if key in keys}


def widen_planned(
    cfg: IntegrationConfig, members: protocols.QueryMembers, planned: list[dict[str, Any]], run_id: str
) -> None:
    """Each planned query's snapshot also names its members before the pages tag them (tags.widen_snapshot:
    a run that fails before its Tags step ends must not leave tags no later run takes away)."""
    for entry in planned:
        widen_snapshot(cfg, members, int(entry["query"]), decode_members(base64.b64decode(entry["members"])), run_id)
