"""Person state written in batches (a page, import mode's collector): TransactWriteItems of up to
batch_writes.TRANSACT_ITEMS, each put conditional on its revision, and no concurrent writer overwritten: a
group with a state changed since it was read writes nothing and its states take the conditional put, and a
state written by another writer in the moment before the batch's own write (a real-time CRM opt-out once a
run ended) refuses the batch's state."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync import aws
from efficy_sync.consent import OptOutRecord
from efficy_sync.fullsync.collect import QueuedPage, group_files, unique_keys
from efficy_sync.fullsync.tags import tag_delta
from efficy_sync.state import PersonState
from efficy_sync.store import batch_writes
from efficy_sync.store.persons import PersonStateStore

from tests.memory_store import MemoryPersonStateStore
from tests.support import create_pk_sk_table

REGION = "eu-west-1"
TABLE = "state"
SLOT = "usercreated.topics.news|email"


@pytest.fixture
def ddb_store(in_process_aws: str) -> PersonStateStore:
    create_pk_sk_table(TABLE, REGION)
    return PersonStateStore(TABLE)


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("ddb_store") if request.param == "dynamodb" else MemoryPersonStateStore()


def state(key: int, stamp: str = "2024-05-01T09:00:00", **fields: Any) -> PersonState:
    return PersonState(integration_id="acme", person_key=str(key), change_stamp=stamp, **fields)


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Counts the DynamoDB client's `name` calls (items per call)."""
    ddb = aws.client("dynamodb")
    real = getattr(ddb, name)
    sizes: list[int] = []

    def wrapped(**kwargs: Any) -> Any:
        sizes.append(len(kwargs["TransactItems"]))
        return real(**kwargs)

    monkeypatch.setattr(ddb, name, wrapped)
    return sizes


def test_put_batch_writes_transact_items_per_conditional_transaction(
    ddb_store: PersonStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_calls(monkeypatch, "transact_write_items")

    refused = ddb_store.put_batch([state(k, consents={SLOT: "opt-in"}) for k in range(1, 61)])

    assert refused == []
    assert batch_writes.TRANSACT_ITEMS >= 48  # a page's chunk (fullsync.page.CHUNK) is one transaction
    assert sorted(sizes) == [60 - batch_writes.TRANSACT_ITEMS, batch_writes.TRANSACT_ITEMS]
    stored = ddb_store.get_many("acme", range(1, 61))
    assert len(stored) == 60 and all(s.revision == 1 and s.consents == {SLOT: "opt-in"} for s in stored.values())
    again = ddb_store.put_batch([s.model_copy(update={"tags": {"vip": True}}) for s in stored.values()])
    assert again == [] and all(s.revision == 2 for s in ddb_store.get_many("acme", range(1, 61)).values())


def test_a_state_changed_since_it_was_read_takes_the_conditional_put(store: Any) -> None:
    store.put(state(1))
    store.put(state(2))
    read = store.get_many("acme", [1, 2])
    store.put(read[2].model_copy(update={"change_stamp": "2024-05-02T09:00:00"}))  # someone newer wrote 2

    refused = store.put_batch([read[1].model_copy(update={"tags": {"vip": True}}), read[2]])

    assert [s.person_key for s in refused] == ["2"]
    after = store.get_many("acme", [1, 2])
    assert after[1].tags == {"vip": True} and after[2].change_stamp == "2024-05-02T09:00:00"


def optout_by_write_back(store: Any, read: PersonState) -> None:
    """What the opt-out write-back does: record the opt-out in its own item, then sync and store the person."""
    record = OptOutRecord(at="2024-05-01T10:00:00Z", source="apsis", event="email.unsubscribe", awaiting_writeback=True)
    assert store.record_optout("acme", 1, SLOT, record)
    store.put(read.model_copy(update={"change_stamp": "2024-05-01T10:05:00", "consents": {SLOT: "opt-out"}}))


def test_an_opt_out_written_back_during_the_batched_write_is_not_lost(store: Any) -> None:
    store.put(state(1, consents={SLOT: "opt-in"}))
    planned = store.get("acme", 1).model_copy(update={"attribute_hashes": {"firstname": "abc"}})  # the import
    optout_by_write_back(store, store.get("acme", 1))  # lands while the import runs

    store.put_batch([planned])

    after = store.get("acme", 1)
    assert after.consents[SLOT] == "opt-out" and SLOT in after.optouts
    assert after.change_stamp == "2024-05-01T10:05:00"  # the write-back's newer state was not overwritten


def test_a_state_written_just_before_the_batch_write_is_not_overwritten(
    ddb_store: PersonStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment BatchWriteItem could not close (its revision check was a read before the write): a state
    another writer stores right before the batch's own request now refuses the batch's state."""
    ddb_store.put(state(1, consents={SLOT: "opt-in"}))
    planned = ddb_store.get("acme", 1).model_copy(update={"attribute_hashes": {"firstname": "abc"}})
    real = batch_writes._transact

    def another_writer_first(table: str, states: list[PersonState]) -> bool:
        optout_by_write_back(ddb_store, ddb_store.get("acme", 1))
        return real(table, states)

    monkeypatch.setattr(batch_writes, "_transact", another_writer_first)
    refused = ddb_store.put_batch([planned])

    after = ddb_store.get("acme", 1)
    assert [s.person_key for s in refused] == ["1"]  # the caller syncs the person again from a fresh read
    assert after.attribute_hashes != {"firstname": "abc"} and after.change_stamp == "2024-05-01T10:05:00"
    assert after.consents[SLOT] == "opt-out" and SLOT in after.optouts


# ---- the collector's pure parts ----------------------------------------------------------------------------


def test_files_gather_whole_pages_up_to_import_rows() -> None:
    pages = [QueuedPage(p, p, 500, tuple(range(p * 500, p * 500 + n))) for p, n in enumerate([500, 300, 0, 500, 40])]
    files = group_files(pages, 1000)
    assert [[e.page for e in f] for f in files] == [[0, 1], [3, 4]]
    assert [[e.page for e in f] for f in group_files(pages, 400)] == [[0], [1], [3], [4]]


def test_a_person_queued_by_two_pages_is_in_one_file_only() -> None:
    """A delete between two pages' reads can move a person into the page read second."""
    pages = [QueuedPage(1, 1, 500, (500, 501, 502)), QueuedPage(0, 0, 500, (498, 499, 500))]
    assert [e.keys for e in unique_keys(pages)] == [(500, 501, 502), (498, 499)]


def test_query_tags_are_set_on_kept_profiles_and_removed_only_where_we_set_them() -> None:
    kept = state(1, exists_in_apsis=True, last_outcome="synced", tags={"vip": True})
    skipped = state(2, exists_in_apsis=True, last_outcome="skipped")
    assert tag_delta({"vip": True}, kept, will_exist=False) == {}  # already tagged: nothing to send
    assert tag_delta({"vip": True, "gold": True}, kept, will_exist=False) == {"gold": True}
    assert tag_delta({"vip": True}, skipped, will_exist=False) == {}  # a profile the sync does not keep
    assert tag_delta({"vip": True}, None, will_exist=True) == {"vip": True}  # created by this very import
    assert tag_delta({"vip": True}, None, will_exist=False) == {}
    assert tag_delta({"vip": False}, kept, will_exist=True) == {"vip": False}
    assert tag_delta({"gold": False}, kept, will_exist=True) == {}  # never set by us: no untag
    assert tag_delta({"vip": False}, None, will_exist=True) == {}
