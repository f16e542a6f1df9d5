"""Speed fixes for moto, applied by the local stack only (they change no behaviour).

SQS: moto computes *every* queue attribute, including the message counts (a scan of all messages with two
datetime conversions each), whenever its own code reads a single attribute such as
ContentBasedDeduplication, which it does several times per message sent. With thousands of FIFO messages
queued, sending became quadratic (500 messages: 11 s; the next 500: 32 s). Reading attributes lazily makes
each lookup cost what it reads.

Server: moto's server picks the backend of every request under one global lock, and on the way lists its
own package directory (`list_of_moto_modules`: a listdir and ~150 isdir calls). With the page workers'
threads all calling DynamoDB, requests queued on that lock: a sampling profile of a 3,000-person full sync
found 72 % of busy threads waiting there. The directory does not change while the process runs, so it is
listed once.

DynamoDB: every Query on a global secondary index (and every Scan) starts from `Table.all_items`, which sorts
every stored item by its keys with moto's key objects, whose comparisons convert both values again each time:
with 100,000 items one index query took seconds, ~95 % of it in those conversions. Sorting by the converted
values, computed once per item, gives the same order (a table's key attributes have one type each).

DynamoDB queries on the table's own key: moto's Table.query keeps the items whose hash key matches from
`all_items`, every item of the table, so one Query cost what the table holds, not what the partition holds: a
full sync of a second integration queried through the first one's 10,000 person states, and its Queries cost
three times the first load's in moto's process. A query on the table's key starts from its partition alone (the
items moto would keep anyway; an index query still starts from every item).

DynamoDB transactions: moto's TransactWriteItems deep-copies every table it writes to before it starts, to
restore the copy if a condition fails. At 100,000 persons (about 200,000 items) one small transaction took
longer than the 60 s read timeout (a full sync's Begin failed on it). A transaction can only change the items
it names, so the local stack journals those (a copy of each before the transaction, or "absent") and, when
moto rolls back, puts exactly them back; the table itself is not copied (moto's own rollback then assigns
the same table back, a no-op). Same outcome: all of the transaction or none of it. (A stream record written
by a rolled-back transaction would stay; the template defines no stream.)

DynamoDB condition expressions: moto lexes and parses a condition anew for every item it checks, and a full
sync's state transactions check the same few conditions (`attribute_not_exists(#r)`, `#r = :r` with the
revision read) on fifty items at a time: parsing was a quarter of moto's CPU in a 10,000-person first load. The
parsed condition (a tree of operators that only reads the item it is evaluated on) is kept per expression,
names and values, with the names and values moto found in it (its check of unused ones reads them); an
expression that fails to parse is not kept and fails again.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

_applied = False


class _LazyAttributes(Mapping):
    def __init__(self, queue: Any) -> None:
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += list(queue.FIFO_ATTRIBUTES)
        if queue.kms_master_key_id:
            names += list(queue.KMS_ATTRIBUTES)
        if queue.policy:
            names.append("Policy")
        if queue.redrive_policy:
            names.append("RedrivePolicy")
        self._names = names

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name == "Policy":
            value = self._queue.policy
        elif name == "RedrivePolicy":
            value = json.dumps(self._queue.redrive_policy) if self._queue.redrive_policy else None
        else:
            value = getattr(self._queue, _field(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@functools.cache
def _field(name: str) -> str:
    """The Queue field of an attribute name: moto's conversion, once per name (it was 4 % of a send)."""
    from moto.core.utils import camelcase_to_underscores

    return camelcase_to_underscores(name)


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.sqs.models import Queue

    Queue.attributes = property(lambda self: _LazyAttributes(self))  # type: ignore[assignment,method-assign]

    from moto.dynamodb.models.table import Table

    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.query = _unsorted_candidates(Table.query)  # type: ignore[method-assign]

    from moto.dynamodb import models as dynamodb_models

    dynamodb_models.copy = _TransactionCopy()  # type: ignore[attr-defined]
    backend = dynamodb_models.DynamoDBBackend
    backend.transact_write_items = _journaled(backend.transact_write_items)  # type: ignore[method-assign]

    from moto.dynamodb.comparisons import ConditionExpressionParser

    ConditionExpressionParser.parse = _memoized(ConditionExpressionParser.parse)  # type: ignore[method-assign]

    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    _applied = True


_querying = threading.local()


def _unsorted_candidates(query: Callable[..., Any]) -> Callable[..., Any]:
    """moto's Table.query sorts its candidates itself (by the index's keys, or by the range key within the one
    hash key): the full-table sort of `all_items` before that decides nothing, so a query skips it."""

    signature = inspect.signature(query)

    def unsorted_query(self: Any, *args: Any, **kwargs: Any) -> Any:
        asked = signature.bind_partial(self, *args, **kwargs).arguments
        _querying.active = True
        # on the table's own key, the candidates are that partition's items only (moto keeps just those)
        _querying.partition = None if asked.get("index_name") else asked.get("hash_key")
        try:
            return query(self, *args, **kwargs)
        finally:
            _querying.active = False
            _querying.partition = None

    return unsorted_query


def _all_items(self: Any) -> list[Any]:
    """moto's Table.all_items, with each item's sort key converted once instead of at every comparison (and no
    sort at all inside a query, which sorts what it keeps; a query on the table's key gets its partition only)."""
    partition = getattr(_querying, "partition", None) if getattr(_querying, "active", False) else None
    if partition is not None:
        stored = self.items.get(partition)
        if stored is None:
            return []
        return list(stored.values()) if self.range_key_attr else [stored]
    items: list[Any] = []
    for hash_set in self.items.values():
        if self.range_key_attr:
            items.extend(hash_set.values())
        else:
            items.append(hash_set)
    if getattr(_querying, "active", False):
        return items
    return sorted(
        items,
        key=lambda x: (_key_value(x.hash_key), _key_value(x.range_key)) if x.range_key else (_key_value(x.hash_key),),
    )


def _key_value(key: Any) -> Any:
    """moto's `cast_value` of a key attribute (S, N or B): it tests five other types before returning a string
    as it is, which made it most of a 100,000-item index query's time."""
    return Decimal(key.value) if key.type == "N" else key.value


_transaction = threading.local()


class _TransactionCopy:
    """moto's DynamoDB module's `copy`: inside a journaled transaction, a table's deep copy is the table itself."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if getattr(_transaction, "journaled", False) and isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def _item_key(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any] | None:
    """(hash value, range value) of the item an operation names, as moto keys its table; None if malformed."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    attrs = op.get("Item") if op_type == "Put" else op.get("Key")
    if not isinstance(attrs, dict) or table.hash_key_attr not in attrs:
        return None
    hash_value = DynamoType(attrs[table.hash_key_attr])
    if table.range_key_attr is None:
        return hash_value, None
    if table.range_key_attr not in attrs:
        return None
    return hash_value, DynamoType(attrs[table.range_key_attr])


def _snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
    """(table, hash, range, copy of the item or None) for every item the transaction names."""
    journal = []
    for entry in transact_items:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue
        op_type, op = next(iter(entry.items()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        key = _item_key(table, op_type, op) if table is not None else None
        if key is None:
            continue
        hash_value, range_value = key
        stored = (
            table.items.get(hash_value) if range_value is None else table.items.get(hash_value, {}).get(range_value)
        )
        journal.append((table, hash_value, range_value, copy.deepcopy(stored)))
    return journal


def _restore(journal: list[tuple[Any, Any, Any, Any]]) -> None:
    """Put every journaled item back as it was, in reverse order (the first copy of an item wins)."""
    for table, hash_value, range_value, item in reversed(journal):
        if range_value is None:
            if item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
        else:
            if item is None:
                table.items.get(hash_value, {}).pop(range_value, None)
                if hash_value in table.items and not table.items[hash_value]:
                    del table.items[hash_value]
            else:
                table.items[hash_value][range_value] = item


def _journaled(transact: Callable[..., Any]) -> Callable[..., Any]:
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        journal = _snapshot(self, transact_items)
        _transaction.journaled = True
        try:
            return transact(self, transact_items)
        except BaseException:
            _restore(journal)  # moto rolled back to "the copy", which was the table itself
            raise
        finally:
            _transaction.journaled = False

    return transact_write_items


#: parsed conditions kept at most (a full sync uses a handful; the bound keeps a long-lived stack's memory flat)
PARSED_KEPT = 4096
_parsed: dict[tuple[str, str, str], tuple[Any, list[Any], list[Any]]] = {}


def _memoized(parse: Callable[..., Any]) -> Callable[..., Any]:
    def memoized_parse(self: Any) -> Any:
        if not self.condition_expression:
            return parse(self)
        key = (
            self.condition_expression,
            json.dumps(self.expression_attribute_names, sort_keys=True),
            json.dumps(self.expression_attribute_values, sort_keys=True),
        )
        kept = _parsed.get(key)
        if kept is None:
            op = parse(self)  # raises for an invalid expression: nothing is kept
            if len(_parsed) >= PARSED_KEPT:
                _parsed.clear()
            _parsed[key] = (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
            return op
        op, names, values = kept
        self.expr_attr_names_found.extend(names)
        self.expr_attr_values_found.extend(values)
        return op

    return memoized_parse
