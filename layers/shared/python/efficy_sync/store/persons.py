"""Per-person sync state: what we last pushed to APSIS One, the Efficy change stamp, the last outcome; and, beside
it, the opt-outs made in APSIS One.

Two items per integration and person, under pk="PERSON#<integration>#<key>":

- sk="STATE": the whole state as one JSON document, written by the real-time worker, full-sync pages and the
  write-back with a put conditional on the Efficy change stamp (a late message can never move a person's state
  backwards) and on the revision the writer read (a sync that planned against an older state cannot overwrite
  what a concurrent sync recorded having sent: it gets ConflictingWrite and plans again).
- sk="OPTOUTS": a map "topic|channel" -> opt-out record, written only by the opt-out write-back (and marked done
  by a sync once a CRM user opted the person in again). It is a separate item because the state document is
  rewritten whole: an opt-out stored inside it could be overwritten by a sync that read the state a moment
  before the opt-out arrived. Each slot is changed with its own conditional update, so concurrent writers of
  different slots, or of the same slot, never undo each other.

The STATE item of a person the health report must list (state.health_issue: a failure, or skipped by design)
also carries `health_pk` = "<integration>#<shard>" and `health_sk` = "<kind>#<category>#<key>": the keys of the
sparse global secondary index HEALTH_INDEX (template.yaml, StateTable). `put` writes the whole item, so a state
that is in step again drops out of the index by the same write that records it; `efficy-sync health` queries
the index and reads only what failed, however many persons are stored. The shard (HEALTH_SHARDS partitions per
integration, by a hash of the key) keeps a mass failure (every person of a full sync refused at once) from
writing one index partition past its throughput; a health check queries each shard (empty ones cost little).

Reads merge the two: `PersonState.optouts` holds the live records, and a slot with a live record reads as
"APSIS One holds an opt-out" in `consents` (the person opted out there themselves), unless we sent an opt-in
for it shortly before or after the opt-out (OPT_IN_RACE_MARGIN): then which one APSIS holds is not known
(our opt-in may have landed after the click, before the automation told us), and the slot reads "unknown",
so the next sync sends the opt-out again. A person the APSIS user
opted out before we ever synced them has an OPTOUTS item and no STATE item; they read as a state that does not
exist in APSIS yet. Retired records (opted in again by a newer CRM change) stay in the map, so a late duplicate
of the same unsubscribe is recognised and not applied a second time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from ..aws import client
from ..consent import OptOutRecord, normalise_stamp
from ..state import UNKNOWN, PersonState, health_issue, utc_now
from .person_items import (  # the item's shape lives there; importers of persons keep working
    HEALTH_INDEX as HEALTH_INDEX,
)
from .person_items import (
    HEALTH_PK as HEALTH_PK,
)
from .person_items import (
    HEALTH_SHARDS as HEALTH_SHARDS,
)
from .person_items import (
    HEALTH_SK as HEALTH_SK,
)
from .person_items import (
    STATE_SK as STATE_SK,
)
from .person_items import (
    ConflictingWrite as ConflictingWrite,
)
from .person_items import (
    HealthKind as HealthKind,
)
from .person_items import (
    StaleWrite as StaleWrite,
)
from .person_items import (
    _key as _key,
)
from .person_items import (
    _pk as _pk,
)
from .person_items import (
    health_keys as health_keys,
)
from .person_items import (
    state_document as state_document,
)
from .person_items import (
    state_item as state_item,
)

#: an opt-in we sent this close to an APSIS opt-out (before or after) may have overwritten it. Wide, because the
#: automation's `occurred_at` may be when its flow ran rather than the click, and clocks differ; the cost of a
#: wide margin is one redundant opt-out call.
OPT_IN_RACE_MARGIN = timedelta(minutes=10)
OPTOUTS_SK = "OPTOUTS"
_RECORDS = "records"


def _order(at: str) -> str:
    """`at` in a form that compares as text (the stored attribute conditions compare)."""
    return normalise_stamp(at)


def merge_optouts(
    state: PersonState | None, integration_id: str, person_key: int | str, records: dict[str, OptOutRecord]
) -> PersonState | None:
    """The state as syncs must see it: live APSIS opt-outs attached, and their slots read as opted out."""
    if not records:
        return state
    base = state or PersonState(integration_id=integration_id, person_key=str(person_key))
    consents = dict(base.consents)
    for slot, record in records.items():
        if consents.get(slot) == "opt-out":
            continue
        sent = base.opted_in_at.get(slot)
        # the person opted out in APSIS One: that is what APSIS holds, unless our opt-in may have come after
        consents[slot] = UNKNOWN if sent and _close_or_after(sent, record.at) else "opt-out"
    return base.model_copy(update={"optouts": dict(records), "consents": consents})


def _close_or_after(sent: str, at: str) -> bool:
    try:
        sent_at = datetime.fromisoformat(normalise_stamp(sent))
        opted_out = datetime.fromisoformat(normalise_stamp(at))
    except ValueError:
        return True  # cannot tell: assume the worst
    return sent_at >= opted_out - OPT_IN_RACE_MARGIN


# ---- DynamoDB typed values (the store uses the low-level client, like the rest of the layer) -------------------


def _to_attr(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    raise TypeError(f"cannot store {type(value).__name__} in an opt-out record")


def _from_attr(attr: dict[str, Any]) -> Any:
    if "S" in attr:
        return attr["S"]
    if "BOOL" in attr:
        return attr["BOOL"]
    return None


def _record_attr(slot: str, record: OptOutRecord, retired_at: str | None = None) -> dict[str, Any]:
    topic, _, channel = slot.rpartition("|")
    fields = record.model_dump(mode="json")
    fields.update(order=_order(record.at), topic=topic, channel=channel, retired_at=retired_at)
    return {"M": {name: _to_attr(value) for name, value in fields.items()}}


def _records_from_item(item: dict[str, Any] | None) -> dict[str, OptOutRecord]:
    """Live records only; retired ones are history kept for duplicate detection."""
    if not item:
        return {}
    records: dict[str, OptOutRecord] = {}
    for slot, attr in item.get(_RECORDS, {}).get("M", {}).items():
        fields = {name: _from_attr(value) for name, value in attr.get("M", {}).items()}
        if fields.get("retired_at"):
            continue
        records[slot] = OptOutRecord.model_validate(fields)
    return records


class PersonStateStore:
    def __init__(self, table_name: str) -> None:
        self._table = table_name

    # ---- reads ------------------------------------------------------------------------------------------
    def get(self, integration_id: str, person_key: int | str) -> PersonState | None:
        """The person's state with their live opt-outs (one consistent BatchGetItem of both items)."""
        return self.get_many(integration_id, [person_key]).get(int(person_key))

    def get_many(self, integration_id: str, keys: Iterable[int | str]) -> dict[int, PersonState]:
        """BatchGetItem in chunks of 50 persons (100 keys: STATE and OPTOUTS each): one round trip per batch of
        persons, not one per person. Callers need not know which subscriptions are mapped: every opt-out of the
        person is in their one OPTOUTS item."""
        wanted = list(dict.fromkeys(int(k) for k in keys))
        states: dict[int, PersonState] = {}
        optouts: dict[int, dict[str, OptOutRecord]] = {}
        ddb = client("dynamodb")
        for start in range(0, len(wanted), 50):
            chunk = wanted[start : start + 50]
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [_key(integration_id, k, sk) for k in chunk for sk in (STATE_SK, OPTOUTS_SK)],
                    "ConsistentRead": True,
                }
            }
            while request:
                response = ddb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    person_key = int(item["pk"]["S"].rsplit("#", 1)[1])
                    if item["sk"]["S"] == STATE_SK:
                        states[person_key] = self._decode(item)
                    else:
                        optouts[person_key] = _records_from_item(item)
                request = response.get("UnprocessedKeys") or {}
        out: dict[int, PersonState] = {}
        for person_key in wanted:
            merged = merge_optouts(states.get(person_key), integration_id, person_key, optouts.get(person_key, {}))
            if merged is not None:
                out[person_key] = merged
        return out

    # ---- the STATE item ---------------------------------------------------------------------------------
    def put(self, state: PersonState) -> None:
        """Store `state` unless a newer Efficy change of this person is already stored (StaleWrite) or the
        stored state is no longer the revision `state` was read at (ConflictingWrite).

        The opt-outs are never written here (see the module docstring)."""
        stamp = normalise_stamp(state.change_stamp or "")
        key = _key(state.integration_id, state.person_key)
        item = state_item(state)
        values: dict[str, Any] = {":s": {"S": stamp}}
        if state.revision:
            condition = "#r = :r AND #s <= :s"
            values[":r"] = {"N": str(state.revision)}
        else:  # read when nothing was stored (or stored by a version without revisions)
            condition = "attribute_not_exists(pk) OR (attribute_not_exists(#r) AND #s <= :s)"
        ddb = client("dynamodb")
        try:
            ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "stamp", "#r": "rev"},
                ExpressionAttributeValues=values,
            )
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            stored = ddb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item") or {}
            if stored.get("stamp", {}).get("S", "") > stamp:
                raise StaleWrite(f"person {state.person_key}: stored state is newer than {stamp}") from exc
            raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read") from exc

    # ---- the OPTOUTS item -------------------------------------------------------------------------------
    def record_optout(self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord) -> bool:
        """Store an APSIS opt-out unless the slot already holds this one or a newer one (live or retired).

        False when it was not stored: a duplicate delivery of the same unsubscribe, or an older one."""
        return self._set_slot(
            integration_id,
            person_key,
            slot,
            _record_attr(slot, record),
            condition="attribute_not_exists(#r.#s) OR #r.#s.#o < :o",
            values={":o": {"S": _order(record.at)}},
        )

    def update_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool:
        """Replace the live record of `slot` (e.g. confirmed) if it is still the one recorded at `expected_at`;
        False when a newer opt-out replaced it meanwhile (that one is left alone)."""
        return self._set_slot(
            integration_id,
            person_key,
            slot,
            _record_attr(slot, record),
            condition="#r.#s.#o = :o AND attribute_type(#r.#s.#x, :null)",
            values={":o": {"S": _order(expected_at)}, ":null": {"S": "NULL"}},
            extra_names={"#x": "retired_at"},
        )

    def retire_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool:
        """The person was opted in again by a newer CRM change: the record stops counting but is kept, so a late
        duplicate of the same unsubscribe is still recognised. False when a newer opt-out replaced it."""
        return self._set_slot(
            integration_id,
            person_key,
            slot,
            _record_attr(slot, record, retired_at=utc_now()),
            condition="#r.#s.#o = :o",
            values={":o": {"S": _order(expected_at)}},
        )

    def _set_slot(
        self,
        integration_id: str,
        person_key: int | str,
        slot: str,
        value: dict[str, Any],
        *,
        condition: str,
        values: dict[str, Any],
        extra_names: dict[str, str] | None = None,
    ) -> bool:
        ddb = client("dynamodb")
        key = _key(integration_id, person_key, OPTOUTS_SK)
        names = {"#r": _RECORDS, "#s": slot, "#o": "order", **(extra_names or {})}
        for _ in range(3):
            try:
                ddb.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET #r.#s = :v",
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={":v": value, **values},
                )
                return True
            except ddb.exceptions.ConditionalCheckFailedException:
                return False
            except ddb.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ValidationException":
                    raise
            # No OPTOUTS item yet (the map path does not exist): create it, unless someone else just did.
            if condition.startswith("#r.#s.#o ="):
                return False  # nothing to update or retire
            try:
                ddb.put_item(
                    TableName=self._table,
                    Item={**key, _RECORDS: {"M": {slot: value}}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
                return True
            except ddb.exceptions.ConditionalCheckFailedException:
                continue  # created concurrently: update it
        raise RuntimeError(f"could not store the opt-out of person {person_key} ({slot})")

    # ---- reports ----------------------------------------------------------------------------------------
    def scan(self, integration_id: str) -> list[PersonState]:
        """Every person with a stored state (for health reports and tests; not on a hot path), with their
        opt-outs; a person known only by an opt-out (never synced) is not listed."""
        pages = (
            client("dynamodb")
            .get_paginator("scan")
            .paginate(
                TableName=self._table,
                FilterExpression="begins_with(pk, :p) AND (sk = :s OR sk = :o)",
                ExpressionAttributeValues={
                    ":p": {"S": f"PERSON#{integration_id}#"},
                    ":s": {"S": STATE_SK},
                    ":o": {"S": OPTOUTS_SK},
                },
            )
        )
        states: dict[int, PersonState] = {}
        optouts: dict[int, dict[str, OptOutRecord]] = {}
        for page in pages:
            for item in page.get("Items", []):
                person_key = int(item["pk"]["S"].rsplit("#", 1)[1])
                if item["sk"]["S"] == STATE_SK:
                    states[person_key] = self._decode(item)
                else:
                    optouts[person_key] = _records_from_item(item)
        merged = (merge_optouts(states[k], integration_id, k, optouts.get(k, {})) for k in sorted(states))
        return [state for state in merged if state is not None]

    def issues(self, integration_id: str, kinds: Iterable[HealthKind] = ("failure",)) -> list[PersonState]:
        """The persons health lists, from the sparse health index only: one query per shard (and kind), each
        reading just the indexed items, so the cost follows the failures, not the stored persons. The index
        is eventually consistent (a state written a moment ago may be missing), and holds no opt-outs (the
        report does not need them)."""
        wanted = tuple(dict.fromkeys(kinds))
        prefixes = [""] if set(wanted) >= {"failure", "skipped"} else [f"{kind}#" for kind in wanted]
        paginator = client("dynamodb").get_paginator("query")
        states: dict[int, PersonState] = {}
        for shard in range(HEALTH_SHARDS):
            for prefix in prefixes:
                condition = "#p = :p" + (" AND begins_with(#s, :k)" if prefix else "")
                values: dict[str, Any] = {":p": {"S": f"{integration_id}#{shard}"}}
                if prefix:
                    values[":k"] = {"S": prefix}
                pages = paginator.paginate(
                    TableName=self._table,
                    IndexName=HEALTH_INDEX,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames={"#p": HEALTH_PK, "#s": HEALTH_SK} if prefix else {"#p": HEALTH_PK},
                    ExpressionAttributeValues=values,
                )
                for page in pages:
                    for item in page.get("Items", []):
                        states[int(item["pk"]["S"].rsplit("#", 1)[1])] = self._decode(item)
        return [states[k] for k in sorted(states)]

    def reindex(self, integration_id: str) -> int:
        """Sets (or removes) the health index keys of every stored state of the integration whose item lacks the
        right ones: states written before the index existed. One scan of the table; each fix is conditional on
        the revision read, so a state written meanwhile (indexed by its own write) is left alone. Returns how
        many items were fixed."""
        ddb = client("dynamodb")
        pages = ddb.get_paginator("scan").paginate(
            TableName=self._table,
            FilterExpression="begins_with(pk, :p) AND sk = :s",
            ExpressionAttributeValues={":p": {"S": f"PERSON#{integration_id}#"}, ":s": {"S": STATE_SK}},
        )
        fixed = 0
        for page in pages:
            for item in page.get("Items", []):
                expected = health_keys(self._decode(item))
                current = {name: item[name] for name in (HEALTH_PK, HEALTH_SK) if name in item}
                if current == expected:
                    continue
                request: dict[str, Any] = {
                    "TableName": self._table,
                    "Key": {"pk": item["pk"], "sk": item["sk"]},
                    "ExpressionAttributeNames": {"#p": HEALTH_PK, "#s": HEALTH_SK, "#r": "rev"},
                }
                values: dict[str, Any] = {}
                if expected:
                    request["UpdateExpression"] = "SET #p = :p, #s = :s"
                    values = {":p": expected[HEALTH_PK], ":s": expected[HEALTH_SK]}
                else:
                    request["UpdateExpression"] = "REMOVE #p, #s"
                if "rev" in item:
                    request["ConditionExpression"] = "#r = :r"
                    values[":r"] = item["rev"]
                else:
                    request["ConditionExpression"] = "attribute_not_exists(#r)"
                if values:
                    request["ExpressionAttributeValues"] = values
                try:
                    ddb.update_item(**request)
                    fixed += 1
                except ddb.exceptions.ConditionalCheckFailedException:
                    continue  # rewritten meanwhile, and indexed by that write
        return fixed

    # ---- batched STATE writes (full sync, import mode): store/batch_writes.py ------------------------------
    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        """Many states at once where no concurrent writer can be overwritten; the ones refused (stale)."""
        from .batch_writes import put_batch

        return put_batch(self, self._table, states, workers=workers)

    @staticmethod
    def _decode(item: dict[str, Any]) -> PersonState:
        state = PersonState.model_validate(json.loads(item["doc"]["S"]))
        return state.model_copy(update={"revision": int(item.get("rev", {}).get("N", "0"))})


class MemoryPersonStateStore:
    """The same contract as PersonStateStore, in memory: for property tests of the consent rules under
    interleavings, dry runs and benchmarks. Each call is atomic, as a DynamoDB item write is; the same contract
    tests run against both stores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, int], tuple[str, int]] = {}  # (JSON, revision): callers never share objects
        self._optouts: dict[tuple[str, int], dict[str, tuple[OptOutRecord, str | None]]] = {}

    def get(self, integration_id: str, person_key: int | str) -> PersonState | None:
        return self.get_many(integration_id, [person_key]).get(int(person_key))

    def get_many(self, integration_id: str, keys: Iterable[int | str]) -> dict[int, PersonState]:
        out: dict[int, PersonState] = {}
        with self._lock:
            for person_key in dict.fromkeys(int(k) for k in keys):
                stored = self._states.get((integration_id, person_key))
                state = None
                if stored is not None:
                    state = PersonState.model_validate_json(stored[0]).model_copy(update={"revision": stored[1]})
                slots = self._optouts.get((integration_id, person_key), {})
                live = {slot: rec for slot, (rec, retired) in slots.items() if not retired}
                merged = merge_optouts(state, integration_id, person_key, live)
                if merged is not None:
                    out[person_key] = merged
        return out

    def put(self, state: PersonState) -> None:
        key = (state.integration_id, int(state.person_key))
        stamp = normalise_stamp(state.change_stamp or "")
        with self._lock:
            stored = self._states.get(key)
            if stored is not None:
                stored_stamp = normalise_stamp(PersonState.model_validate_json(stored[0]).change_stamp or "")
                if stored_stamp > stamp:
                    raise StaleWrite(f"person {state.person_key}: stored state is newer than {stamp}")
                if stored[1] != state.revision:
                    raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read")
            elif state.revision:
                raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read")
            self._states[key] = (state_document(state), state.revision + 1)

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        """PersonStateStore.put_batch: unconditional where the stored revision is still the one read."""
        refused = []
        for state in states:
            key = (state.integration_id, int(state.person_key))
            with self._lock:
                stored = self._states.get(key)
                if (stored[1] if stored else 0) == state.revision:
                    self._states[key] = (state_document(state), state.revision + 1)
                    continue
            try:
                self.put(state)
            except StaleWrite:
                refused.append(state)
        return refused

    def record_optout(self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord) -> bool:
        with self._lock:
            slots = self._optouts.setdefault((integration_id, int(person_key)), {})
            current = slots.get(slot)
            if current is not None and not _order(current[0].at) < _order(record.at):
                return False
            slots[slot] = (record, None)
            return True

    def update_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool:
        return self._replace(integration_id, person_key, slot, record, expected_at, None, live_only=True)

    def retire_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool:
        return self._replace(integration_id, person_key, slot, record, expected_at, utc_now(), live_only=False)

    def _replace(
        self,
        integration_id: str,
        person_key: int | str,
        slot: str,
        record: OptOutRecord,
        expected_at: str,
        retired_at: str | None,
        *,
        live_only: bool,
    ) -> bool:
        with self._lock:
            slots = self._optouts.get((integration_id, int(person_key)), {})
            current = slots.get(slot)
            if current is None or _order(current[0].at) != _order(expected_at) or (live_only and current[1]):
                return False
            slots[slot] = (record, retired_at)
            return True

    def issues(self, integration_id: str, kinds: Iterable[HealthKind] = ("failure",)) -> list[PersonState]:
        wanted = set(kinds)
        return [s for s in self.scan(integration_id) if (issue := health_issue(s)) is not None and issue[0] in wanted]

    def reindex(self, integration_id: str) -> int:
        return 0  # `issues` reads the states themselves: nothing to index

    def scan(self, integration_id: str) -> list[PersonState]:
        with self._lock:
            keys = sorted(k for i, k in self._states if i == integration_id)
        return list(self.get_many(integration_id, keys).values())
