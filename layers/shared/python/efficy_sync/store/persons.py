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

Reads merge the two: `PersonState.optouts` holds the live records, and their slots read as the consent policy
says (consent.merge_optouts: opted out, or "unknown" when our opt-in was sent close to it). A person the APSIS user
opted out before we ever synced them has an OPTOUTS item and no STATE item; they read as a state that does not
exist in APSIS yet. Retired records (opted in again by a newer CRM change) stay in the map, so a late duplicate
of the same unsubscribe is recognised and not applied a second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..aws import client
from ..consent import (
    READ_ORDER_SLACK,
    OptOutRecord,
    future_limit,
    merge_optouts,
    normalise_stamp,
    read_order,
    read_order_bound,
)
from ..state import PersonState, utc_now
from .dynamo import batch_get, from_item, query_all, scan_all, to_item
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

OPTOUTS_SK = "OPTOUTS"
_RECORDS = "records"


def _order(at: str) -> str:
    """`at` in a form that compares as text (the stored attribute conditions compare)."""
    return normalise_stamp(at)


def with_optouts(
    state: PersonState | None, integration_id: str, person_key: int | str, records: Mapping[str, OptOutRecord]
) -> PersonState | None:
    """A read's state: the stored one (or, for a person known only by an APSIS opt-out, a blank one) with the
    live opt-outs merged as the consent policy says (consent.merge_optouts); None when neither is stored."""
    if not records:
        return state
    return merge_optouts(state or PersonState(integration_id=integration_id, person_key=str(person_key)), records)


def _record_fields(slot: str, record: OptOutRecord, retired_at: str | None = None) -> dict[str, Any]:
    """The stored form of a record in the OPTOUTS item's map: its fields, the order its conditions compare and,
    once retired, when."""
    topic, _, channel = slot.rpartition("|")
    fields = record.model_dump(mode="json")
    fields.update(order=_order(record.at), topic=topic, channel=channel, retired_at=retired_at)
    return fields


def _records_from_item(item: Mapping[str, Any] | None) -> dict[str, OptOutRecord]:
    """Live records only (of an item read as Python); retired ones are history kept for duplicate detection."""
    if not item:
        return {}
    records: dict[str, OptOutRecord] = {}
    for slot, fields in (item.get(_RECORDS) or {}).items():
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
        """BatchGetItem of 50 persons a call (100 keys: STATE and OPTOUTS each): one round trip per batch of
        persons, not one per person. Callers need not know which subscriptions are mapped: every opt-out of the
        person is in their one OPTOUTS item."""
        wanted = list(dict.fromkeys(int(k) for k in keys))
        items = batch_get(self._table, [_key(integration_id, k, sk) for k in wanted for sk in (STATE_SK, OPTOUTS_SK)])
        states, optouts = self._split(items)
        out: dict[int, PersonState] = {}
        for person_key in wanted:
            merged = with_optouts(states.get(person_key), integration_id, person_key, optouts.get(person_key, {}))
            if merged is not None:
                out[person_key] = merged
        return out

    def _split(
        self, items: Iterable[dict[str, Any]]
    ) -> tuple[dict[int, PersonState], dict[int, dict[str, OptOutRecord]]]:
        """STATE and OPTOUTS items (read as Python) by person key."""
        states: dict[int, PersonState] = {}
        optouts: dict[int, dict[str, OptOutRecord]] = {}
        for item in items:
            person_key = int(item["pk"].rsplit("#", 1)[1])
            if item["sk"] == STATE_SK:
                states[person_key] = self._decode(item)
            else:
                optouts[person_key] = _records_from_item(item)
        return states, optouts

    # ---- the STATE item ---------------------------------------------------------------------------------
    def put(self, state: PersonState) -> None:
        """Store `state` unless a newer Efficy change of this person is already stored (StaleWrite) or the
        stored state is no longer the revision `state` was read at (ConflictingWrite).

        The opt-outs are never written here (see the module docstring)."""
        stamp = normalise_stamp(state.change_stamp or "")
        key = _key(state.integration_id, state.person_key)
        item = state_item(state)
        # when both snapshots' read times are known and the reads do not overlap, they decide (consent.read_order):
        # a stored snapshot answered before ours was asked for (`:b`) is older whatever its stamp; one asked for
        # after ours was answered (`:e`) is newer. Otherwise the stamps decide, where a stored stamp beyond our
        # clock bounds nothing (consent.beyond_now): `:f` lets a later change through.
        limit = future_limit()
        newer_than = read_order_bound(state.asked_at)
        older_than = read_order_bound(state.answered_at, READ_ORDER_SLACK)
        values: dict[str, Any] = {":s": stamp, ":f": limit}
        names = {"#s": "stamp", "#r": "rev"}
        newer = "#s <= :s OR #s > :f"
        if newer_than is not None:
            newer += " OR #a < :b"
            values[":b"], names["#a"] = newer_than, "answered"
        newer = f"({newer})"
        if older_than is not None:
            newer = f"(NOT #q > :e AND {newer})"
            values[":e"], names["#q"] = older_than, "asked"
        if state.revision:
            condition = f"#r = :r AND {newer}"
            values[":r"] = state.revision
        else:  # read when nothing was stored (or stored by a version without revisions)
            condition = f"attribute_not_exists(pk) OR (attribute_not_exists(#r) AND {newer})"
        ddb = client("dynamodb")
        try:
            ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
            )
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            stored = from_item(ddb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item") or {})
            order = read_order(
                state.asked_at, state.answered_at, str(stored.get("asked", "")), str(stored.get("answered", ""))
            )
            older = order < 0 if order is not None else limit >= str(stored.get("stamp", "")) > stamp
            if older:
                raise StaleWrite(f"person {state.person_key}: stored state is newer than {stamp}") from exc
            raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read") from exc

    def announce(self, state: PersonState) -> None:
        """`put`, now: a write-ahead before APSIS calls (sync.py) is stored even where the other writes wait
        for a batch (fullsync/page_states.py)."""
        self.put(state)

    def withdraw(self, state: PersonState) -> None:
        """Removes a write-ahead that stood for a person with no state before, once nothing reached APSIS: a
        person never synced keeps no state. Only the revision `state` was stored at (ConflictingWrite else)."""
        ddb = client("dynamodb")
        try:
            ddb.delete_item(
                TableName=self._table,
                Key=_key(state.integration_id, state.person_key),
                ConditionExpression="#r = :r",
                ExpressionAttributeNames={"#r": "rev"},
                ExpressionAttributeValues=to_item({":r": state.revision}),
            )
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read") from exc

    # ---- the OPTOUTS item -------------------------------------------------------------------------------
    def record_optout(self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord) -> bool:
        """Store an APSIS opt-out unless the slot already holds this one or a newer one (live or retired).

        False when it was not stored: a duplicate delivery of the same unsubscribe, or an older one."""
        return self._set_slot(
            integration_id,
            person_key,
            slot,
            _record_fields(slot, record),
            condition="attribute_not_exists(#r.#s) OR #r.#s.#o < :o",
            values={":o": _order(record.at)},
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
            _record_fields(slot, record),
            condition="#r.#s.#o = :o AND attribute_type(#r.#s.#x, :null)",
            values={":o": _order(expected_at), ":null": "NULL"},
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
            _record_fields(slot, record, retired_at=utc_now()),
            condition="#r.#s.#o = :o",
            values={":o": _order(expected_at)},
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
                    ExpressionAttributeValues=to_item({":v": value, **values}),
                )
                return True
            except ddb.exceptions.ConditionalCheckFailedException:
                return False
            except ddb.exceptions.ClientError as exc:
                if not _missing_document_path(exc):
                    raise  # another refusal (a malformed request is a bug): never read as "no item yet"
            # No OPTOUTS item yet (the map path does not exist): create it, unless someone else just did.
            if condition.startswith("#r.#s.#o ="):
                return False  # nothing to update or retire
            try:
                ddb.put_item(
                    TableName=self._table,
                    Item={**key, **to_item({_RECORDS: {slot: value}})},
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
        items = scan_all(
            self._table,
            "begins_with(pk, :p) AND (sk = :s OR sk = :o)",
            {":p": f"PERSON#{integration_id}#", ":s": STATE_SK, ":o": OPTOUTS_SK},
        )
        states, optouts = self._split(items)
        merged = (with_optouts(states[k], integration_id, k, optouts.get(k, {})) for k in sorted(states))
        return [state for state in merged if state is not None]

    def keys_in_apsis(self, integration_id: str) -> Iterator[int]:
        """The key of each person whose stored state says their profile exists in APSIS One, in no particular
        order, as the Scan's pages arrive: each item projected to its key and document, of which only
        `exists_in_apsis` is read. `scan` holds every state decoded at once (~4.6 KB each), which for a
        1,000,000-person integration is ~4.5 GB; reconcile needs only these keys (reconcile_run.py)."""
        items = scan_all(
            self._table,
            "begins_with(pk, :p) AND sk = :s",
            {":p": f"PERSON#{integration_id}#", ":s": STATE_SK},
            projection="pk, doc",
        )
        for item in items:
            if json.loads(item["doc"]).get("exists_in_apsis"):
                yield int(item["pk"].rsplit("#", 1)[1])

    def issues(self, integration_id: str, kinds: Iterable[HealthKind] = ("failure",)) -> list[PersonState]:
        """The persons health lists, from the sparse health index only: one query per shard (and kind), each
        reading just the indexed items, so the cost follows the failures, not the stored persons. The index
        is eventually consistent (a state written a moment ago may be missing), and holds no opt-outs (the
        report does not need them)."""
        wanted = tuple(dict.fromkeys(kinds))
        prefixes = [""] if set(wanted) >= {"failure", "skipped"} else [f"{kind}#" for kind in wanted]
        states: dict[int, PersonState] = {}
        for shard in range(HEALTH_SHARDS):
            for prefix in prefixes:
                condition = "#p = :p" + (" AND begins_with(#s, :k)" if prefix else "")
                values = {":p": f"{integration_id}#{shard}", **({":k": prefix} if prefix else {})}
                names = {"#p": HEALTH_PK, "#s": HEALTH_SK} if prefix else {"#p": HEALTH_PK}
                for item in query_all(self._table, condition, values, names=names, index=HEALTH_INDEX):
                    states[int(item["pk"].rsplit("#", 1)[1])] = self._decode(item)
        return [states[k] for k in sorted(states)]

    def reindex(self, integration_id: str) -> int:
        """Sets (or removes) the health index keys of every stored state of the integration whose item lacks the
        right ones: states written before the index existed. One scan of the table; each fix is conditional on
        the revision read, so a state written meanwhile (indexed by its own write) is left alone. Returns how
        many items were fixed."""
        ddb = client("dynamodb")
        items = scan_all(
            self._table, "begins_with(pk, :p) AND sk = :s", {":p": f"PERSON#{integration_id}#", ":s": STATE_SK}
        )
        fixed = 0
        for item in items:
            expected = health_keys(self._decode(item))
            current = {name: item[name] for name in (HEALTH_PK, HEALTH_SK) if name in item}
            if current == expected:
                continue
            request: dict[str, Any] = {
                "TableName": self._table,
                "Key": to_item({"pk": item["pk"], "sk": item["sk"]}),
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
                request["ExpressionAttributeValues"] = to_item(values)
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

    def announce_many(self, states: list[PersonState]) -> list[PersonState]:
        """Write-aheads of a page's chunk (fullsync/page_states.py): put_batch's conditional writes, in a call of
        its own so that counts tell them from the states the syncs decided."""
        from .batch_writes import put_batch

        return put_batch(self, self._table, states)

    @staticmethod
    def _decode(item: Mapping[str, Any]) -> PersonState:
        """A STATE item read as Python: the document, at the item's revision."""
        state = PersonState.model_validate(json.loads(item["doc"]))
        return state.model_copy(update={"revision": int(item.get("rev", 0))})


def _missing_document_path(exc: Exception) -> bool:
    """DynamoDB's answer to SET on a map that does not exist yet (the person's OPTOUTS item is absent): a
    ValidationException saying the document path is invalid for update. Any other ValidationException is a
    request DynamoDB refused; taken as "no item yet", it would create the item or report "replaced meanwhile"
    instead of failing the write."""
    error = getattr(exc, "response", {}).get("Error", {})
    return error.get("Code") == "ValidationException" and "document path" in str(error.get("Message", "")).lower()
