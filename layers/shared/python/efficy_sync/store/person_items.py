"""The STATE item of a person (state table): its key, its attributes and the sparse health index keys.

One place for the item's shape, shared by the store (`persons.py`, conditional puts) and the batched writes
(`batch_writes.py`, import mode). Item: pk `PERSON#<integration>#<key>`, sk `STATE`; `doc` (the state as JSON,
without opt-outs and revision), `stamp` (the Efficy change stamp, comparable as text), `rev` (revision, the
optimistic lock), `outcome`, `error_category`, `asked`/`answered` (when we asked Efficy for the snapshot the
state was made from and when the answer arrived, normalised, only when known: the conditional put orders
snapshots by them, consent.read_order) and `health_pk`/`health_sk` only
while the person is unhealthy.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

from .. import correlation
from ..consent import normalise_stamp
from ..state import PersonState, health_issue
from .dynamo import key, to_item

STATE_SK = "STATE"
#: the sparse index over the persons health lists (template.yaml, StateTable); its key attributes
HEALTH_INDEX = "health"
HEALTH_PK = "health_pk"
HEALTH_SK = "health_sk"
#: index partitions per integration; changing it needs `efficy-sync health ID --scan` to re-key stored states
HEALTH_SHARDS = 8
HealthKind = Literal["failure", "skipped"]


class StaleWrite(Exception):
    """A newer change of this person was already stored; the stored state wins."""


class ConflictingWrite(StaleWrite):
    """The stored state changed since it was read (its change stamp is not newer than ours): read it again and
    plan against it. A StaleWrite, so callers that only know StaleWrite drop the write, as before."""


def _pk(integration_id: str, person_key: int | str) -> str:
    return f"PERSON#{integration_id}#{person_key}"


def _key(integration_id: str, person_key: int | str, sk: str = STATE_SK) -> dict[str, Any]:
    return key(_pk(integration_id, person_key), sk)


def health_keys(state: PersonState) -> dict[str, str]:
    """The health index attributes of the state's item: empty (not indexed) when the person is in step."""
    issue = health_issue(state)
    if issue is None:
        return {}
    kind, category = issue
    shard = zlib.crc32(str(state.person_key).encode()) % HEALTH_SHARDS
    return {HEALTH_PK: f"{state.integration_id}#{shard}", HEALTH_SK: f"{kind}#{category}#{state.person_key}"}


def state_item(state: PersonState) -> dict[str, Any]:
    """The whole STATE item `put` writes (at the next revision). Whole, so that a state in step again leaves the
    health index by the same write that records it."""
    fields = {
        "doc": state_document(state),
        "stamp": normalise_stamp(state.change_stamp or ""),
        "rev": state.revision + 1,
        "outcome": state.last_outcome or "",
        "error_category": state.error_category or "",
        **({"asked": normalise_stamp(state.asked_at)} if state.asked_at else {}),
        **({"answered": normalise_stamp(state.answered_at)} if state.answered_at else {}),
        **health_keys(state),
    }
    return {**_key(state.integration_id, state.person_key), **to_item(fields)}


def state_document(state: PersonState) -> str:
    """The STATE item's JSON: everything except the opt-outs (their own item) and the revision (an attribute),
    with the correlation id of the change being handled, so an operator finds which change wrote an outcome."""
    current = correlation.current()
    if current and current != state.correlation_id:
        state = state.model_copy(update={"correlation_id": current})
    # `tags_unknown` is left out while empty (nearly always): the item stays as it was before the field existed
    left_out = {"optouts", "revision"} if state.tags_unknown else {"optouts", "revision", "tags_unknown"}
    return state.model_dump_json(exclude=left_out)
