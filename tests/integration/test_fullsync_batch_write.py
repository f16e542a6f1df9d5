"""Person state written in batches (import mode's collector): BatchWriteItem of 25, unprocessed items sent
again, and no concurrent writer overwritten: a state changed since it was read takes the conditional put, and an
opt-out the write-back records during the batch is never lost (it lives in its own item)."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync import aws
from efficy_sync.consent import OptOutRecord
from efficy_sync.fullsync.collect import QueuedPage, group_files, tag_delta, unique_keys
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


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str, fail_first: int = 0) -> list[int]:
    """Counts the DynamoDB client's `name` calls (items per call); the first `fail_first` calls leave their
    last item unprocessed, as a throttled BatchWriteItem does."""
    ddb = aws.client("dynamodb")
    real = getattr(ddb, name)
    sizes: list[int] = []

    def wrapped(**kwargs: Any) -> Any:
        items = next(iter(kwargs["RequestItems"].values()))
        sizes.append(len(items))
        if len(sizes) <= fail_first:
            answer = real(RequestItems={TABLE: items[:-1]})
            return {**answer, "UnprocessedItems": {TABLE: items[-1:]}}
        return real(**kwargs)

    monkeypatch.setattr(ddb, name, wrapped)
    return sizes


def test_put_batch_writes_25_per_call_and_sends_unprocessed_items_again(
    ddb_store: PersonStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("efficy_sync.store.batch_writes.BATCH_BACKOFF", 0.001)
    sizes = count_calls(monkeypatch, "batch_write_item", fail_first=1)

    refused = ddb_store.put_batch([state(k, consents={SLOT: "opt-in"}) for k in range(1, 61)])

    assert refused == []
    assert sorted(sizes) == [1, 10, 25, 25]  # 25 + 25 + 10, and the one item left unprocessed sent again
    stored = ddb_store.get_many("acme", range(1, 61))
    assert len(stored) == 60 and all(s.revision == 1 and s.consents == {SLOT: "opt-in"} for s in stored.values())


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


def test_an_opt_out_in_the_last_milliseconds_before_the_batch_is_not_lost(
    ddb_store: PersonStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window a batch cannot close (between its revision check and its write): the STATE item is
    overwritten, the opt-out is not (its own item), so the slot still reads opted out."""
    ddb_store.put(state(1, consents={SLOT: "opt-in"}))
    planned = ddb_store.get("acme", 1).model_copy(update={"attribute_hashes": {"firstname": "abc"}})
    checked = batch_writes._revisions(TABLE, "acme", [1])
    optout_by_write_back(ddb_store, ddb_store.get("acme", 1))
    monkeypatch.setattr(batch_writes, "_revisions", lambda *_: checked)  # read before the opt-out

    ddb_store.put_batch([planned])

    after = ddb_store.get("acme", 1)
    assert after.attribute_hashes == {"firstname": "abc"}  # the batch did overwrite the STATE item
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
