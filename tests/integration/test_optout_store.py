"""The person state store's contract, run against both stores: DynamoDB (moto, in-process) and the in-memory one
the interleaving tests use. Opt-outs live in their own item, so no state write can lose them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from efficy_sync.consent import OptOutRecord
from efficy_sync.person_plan import is_stale
from efficy_sync.state import PersonState
from efficy_sync.store.persons import (
    ConflictingWrite,
    PersonStateStore,
    StaleWrite,
)

from tests.memory_store import MemoryPersonStateStore
from tests.support import create_pk_sk_table

REGION = "eu-west-1"
TABLE = "state"
SLOT = "usercreated.topics.news|email"
OTHER = "usercreated.topics.events|email"
T1, T2, T3 = "2024-05-01T10:00:00.000Z", "2024-05-01T11:00:00.000Z", "2024-05-01T12:00:00.000Z"


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryPersonStateStore()
    request.getfixturevalue("in_process_aws")
    create_pk_sk_table(TABLE, REGION)
    return PersonStateStore(TABLE)


def state(key: int = 7, stamp: str = "2024-05-01T09:00:00", **fields: Any) -> PersonState:
    return PersonState(integration_id="acme", person_key=str(key), change_stamp=stamp, **fields)


def optout(at: str = T1, **fields: Any) -> OptOutRecord:
    return OptOutRecord(
        **{"at": at, "source": "apsis", "event": "email.unsubscribe", "awaiting_writeback": True, **fields}
    )


# ---- the state item ------------------------------------------------------------------------------------------


def test_put_then_get_round_trips_and_counts_revisions(store: Any) -> None:
    assert store.get("acme", 7) is None
    store.put(state(exists_in_apsis=True, consents={SLOT: "opt-in"}))
    first = store.get("acme", 7)
    assert first.exists_in_apsis and first.consents == {SLOT: "opt-in"} and first.revision == 1
    store.put(first.model_copy(update={"change_stamp": "2024-05-01T09:30:00"}))
    assert store.get("acme", 7).revision == 2


def test_an_older_stamp_is_a_stale_write(store: Any) -> None:
    store.put(state(stamp="2024-05-01T09:00:00"))
    current = store.get("acme", 7)
    with pytest.raises(StaleWrite) as caught:
        store.put(current.model_copy(update={"change_stamp": "2024-05-01T08:00:00"}))
    assert not isinstance(caught.value, ConflictingWrite)


def test_a_stored_stamp_beyond_our_clock_does_not_hold_back_later_changes(store: Any) -> None:
    """Efficy's clock was years ahead once (or an import set D_CHANGE): every later, genuine change of the
    person would have been refused as older, and dropped as "stale", until that date. A stamp beyond
    consent.FUTURE_STAMP_SLACK is no bound; a plausible newer stamp still is."""

    def stamp(hours: float) -> str:  # Efficy's naive stamp, `hours` from now
        return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S")

    store.put(state(stamp="2099-01-01T00:00:00"))
    current = store.get("acme", 7)
    genuine = stamp(-1)
    assert not is_stale(genuine, current)
    store.put(current.model_copy(update={"change_stamp": genuine}))
    assert store.get("acme", 7).change_stamp == genuine
    store.put(store.get("acme", 7).model_copy(update={"change_stamp": stamp(12)}))  # a time zone ahead: real
    with pytest.raises(StaleWrite):
        store.put(store.get("acme", 7).model_copy(update={"change_stamp": stamp(-2)}))
    assert is_stale(stamp(-2), store.get("acme", 7))


def test_the_read_order_decides_over_the_change_stamps_when_the_reads_do_not_overlap(store: Any) -> None:
    """D_CHANGE is Efficy's naive local time: after the clocks go back, a later edit is stamped earlier (02:05
    after 02:50). A snapshot we asked for after the stored one was answered is newer whatever its stamp; one
    answered before the stored one was asked for is older whatever its stamp; overlapping reads, or unknown
    times, leave it to the stamps (consent.read_order)."""

    def at(seconds: float) -> str:
        return (datetime(2026, 10, 25, 0, 50, tzinfo=UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")

    store.put(state(stamp="2026-10-25T02:50:00", asked_at=at(0), answered_at=at(0.2)))
    current = store.get("acme", 7)
    assert (current.asked_at, current.answered_at) == (at(0), at(0.2))

    earlier_read = {"change_stamp": "2026-10-25T02:59:00", "asked_at": at(-10), "answered_at": at(-9.8)}
    assert is_stale("2026-10-25T02:59:00", current, at(-10), at(-9.8))  # newer stamp, older read
    with pytest.raises(StaleWrite) as caught:
        store.put(current.model_copy(update=earlier_read))
    assert not isinstance(caught.value, ConflictingWrite)

    overlapping = {"change_stamp": "2026-10-25T02:05:00", "asked_at": at(0.3), "answered_at": at(0.35)}
    assert is_stale("2026-10-25T02:05:00", current, at(0.3), at(0.35))  # within READ_ORDER_SLACK: the stamps
    with pytest.raises(StaleWrite):
        store.put(current.model_copy(update=overlapping))
    unknown = {"change_stamp": "2026-10-25T02:05:00", "asked_at": "", "answered_at": ""}
    with pytest.raises(StaleWrite):
        store.put(current.model_copy(update=unknown))

    later_read = {"change_stamp": "2026-10-25T02:05:00", "asked_at": at(900), "answered_at": at(900.2)}
    assert not is_stale("2026-10-25T02:05:00", current, at(900), at(900.2))
    store.put(current.model_copy(update=later_read))
    stored = store.get("acme", 7)
    assert stored.change_stamp == "2026-10-25T02:05:00" and stored.asked_at == at(900)


def test_a_state_changed_since_it_was_read_is_a_conflicting_write(store: Any) -> None:
    store.put(state())
    read_by_a = store.get("acme", 7)
    read_by_b = store.get("acme", 7)
    store.put(read_by_a.model_copy(update={"consents": {SLOT: "opt-in"}}))
    with pytest.raises(ConflictingWrite):
        store.put(read_by_b.model_copy(update={"change_stamp": "2024-05-01T09:30:00"}))
    with pytest.raises(ConflictingWrite):  # a writer that read nothing cannot overwrite what is there either
        store.put(state(stamp="2024-05-01T09:45:00"))
    assert store.get("acme", 7).consents == {SLOT: "opt-in"}


def test_put_never_writes_the_opt_outs(store: Any) -> None:
    """A sync that read the person before the opt-out was recorded cannot erase it with its whole-state put."""
    store.put(state())
    read_before = store.get("acme", 7)
    assert store.record_optout("acme", 7, SLOT, optout())
    store.put(read_before.model_copy(update={"change_stamp": "2024-05-01T09:30:00", "optouts": {}}))
    after = store.get("acme", 7)
    assert SLOT in after.optouts and after.optouts[SLOT].awaiting_writeback
    with_optouts = after.model_copy(update={"change_stamp": "2024-05-01T09:40:00"})
    store.put(with_optouts.model_copy(update={"optouts": {OTHER: optout(T2)}}))
    assert set(store.get("acme", 7).optouts) == {SLOT}


# ---- the opt-outs ----------------------------------------------------------------------------------------------


def test_an_opt_out_of_a_person_we_never_synced_is_kept(store: Any) -> None:
    assert store.record_optout("acme", 8, SLOT, optout())
    read = store.get("acme", 8)
    assert read is not None and read.person_key == "8" and not read.exists_in_apsis and read.revision == 0
    assert read.optouts[SLOT].source == "apsis" and read.consents == {SLOT: "opt-out"}
    store.put(read.model_copy(update={"exists_in_apsis": True}))  # the first sync of that person
    assert store.get("acme", 8).exists_in_apsis


def test_a_live_opt_out_reads_as_held_by_apsis(store: Any) -> None:
    store.put(state(exists_in_apsis=True, consents={SLOT: "opt-in", OTHER: "opt-in"}))
    store.record_optout("acme", 7, SLOT, optout())
    assert store.get("acme", 7).consents == {SLOT: "opt-out", OTHER: "opt-in"}


def test_an_opt_in_we_sent_close_to_the_opt_out_makes_it_unknown(store: Any) -> None:
    at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    close = (at - timedelta(minutes=3)).isoformat()
    long_before = (at - timedelta(hours=2)).isoformat()
    store.put(state(consents={SLOT: "opt-in", OTHER: "opt-in"}, opted_in_at={SLOT: close, OTHER: long_before}))
    store.record_optout("acme", 7, SLOT, optout(at.isoformat()))
    store.record_optout("acme", 7, OTHER, optout(at.isoformat()))
    assert store.get("acme", 7).consents == {SLOT: "unknown", OTHER: "opt-out"}


def test_only_a_newer_opt_out_replaces_the_recorded_one(store: Any) -> None:
    assert store.record_optout("acme", 7, SLOT, optout(T2))
    assert not store.record_optout("acme", 7, SLOT, optout(T2))  # the same unsubscribe delivered again
    assert not store.record_optout("acme", 7, SLOT, optout(T1))  # an older one
    assert store.record_optout("acme", 7, SLOT, optout(T3, event="email.abuse"))
    assert store.get("acme", 7).optouts[SLOT].event == "email.abuse"


def test_updates_apply_only_to_the_record_that_was_read(store: Any) -> None:
    store.record_optout("acme", 7, SLOT, optout(T1))
    confirmed = optout(T1).model_copy(update={"awaiting_writeback": False, "confirmed": True, "confirmed_stamp": "x"})
    assert not store.update_optout("acme", 7, SLOT, confirmed, expected_at=T2)
    assert not store.update_optout("acme", 7, OTHER, confirmed, expected_at=T1)  # no such slot
    assert not store.update_optout("acme", 9, SLOT, confirmed, expected_at=T1)  # no such person
    assert store.update_optout("acme", 7, SLOT, confirmed, expected_at=T1)
    assert store.get("acme", 7).optouts[SLOT].confirmed


def test_a_retired_opt_out_no_longer_counts_but_still_stops_its_duplicate(store: Any) -> None:
    store.put(state(consents={SLOT: "opt-in"}))
    store.record_optout("acme", 7, SLOT, optout(T1))
    record = store.get("acme", 7).optouts[SLOT]
    assert store.retire_optout("acme", 7, SLOT, record, expected_at=T1)
    after = store.get("acme", 7)
    assert after.optouts == {} and after.consents == {SLOT: "opt-in"}
    assert not store.update_optout("acme", 7, SLOT, record, expected_at=T1)  # retired records stay retired
    assert not store.record_optout("acme", 7, SLOT, optout(T1))  # the late duplicate
    assert store.record_optout("acme", 7, SLOT, optout(T2))  # a new unsubscribe
    assert SLOT in store.get("acme", 7).optouts


def test_get_many_reads_states_and_opt_outs_in_batches(store: Any) -> None:
    for key in range(1, 121):
        store.put(state(key))
    for key in (3, 77, 130):
        store.record_optout("acme", key, SLOT, optout())
    found = store.get_many("acme", list(range(1, 131)))
    assert set(found) == set(range(1, 121)) | {130}
    assert {k for k, s in found.items() if s.optouts} == {3, 77, 130}
    assert store.get_many("acme", []) == {}
    scanned = {s.person_key: s for s in store.scan("acme")}  # persons with a state; 130 was never synced
    assert set(scanned) == {str(k) for k in range(1, 121)} and scanned["77"].optouts


def test_keys_in_apsis_lists_the_persons_whose_state_says_their_profile_exists(store: Any) -> None:
    """Reconcile's keys (its fallback without an export, its empty-export check), read without a decoded state."""
    for key in range(1, 8):
        store.put(state(key, exists_in_apsis=key % 2 == 1))
    store.record_optout("acme", 3, SLOT, optout())
    store.record_optout("acme", 4, SLOT, optout())  # an opt-out makes no profile
    store.record_optout("acme", 130, SLOT, optout())  # known only by an opt-out: never synced
    store.put(PersonState(integration_id="acme2", person_key="9", exists_in_apsis=True))  # another integration
    assert sorted(store.keys_in_apsis("acme")) == [1, 3, 5, 7]
    assert sorted(store.keys_in_apsis("acme")) == [int(s.person_key) for s in store.scan("acme") if s.exists_in_apsis]
    assert list(store.keys_in_apsis("nobody")) == []


def test_the_state_document_holds_no_opt_outs(store: Any) -> None:
    if isinstance(store, MemoryPersonStateStore):
        pytest.skip("DynamoDB item layout")
    store.put(state())
    store.record_optout("acme", 7, SLOT, optout())
    store.put(store.get("acme", 7).model_copy(update={"change_stamp": "2024-05-01T09:30:00"}))
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=TABLE)["Items"]
    by_sk = {item["sk"]["S"]: item for item in items}
    assert set(by_sk) == {"STATE", "OPTOUTS"}
    doc = json.loads(by_sk["STATE"]["doc"]["S"])
    assert "optouts" not in doc and "revision" not in doc
    record = by_sk["OPTOUTS"]["records"]["M"][SLOT]["M"]
    assert record["topic"]["S"] == "usercreated.topics.news" and record["channel"]["S"] == "email"
    assert record["source"]["S"] == "apsis" and record["awaiting_writeback"]["BOOL"] is True


def test_a_state_written_before_revisions_existed_is_still_updated(store: Any) -> None:
    if isinstance(store, MemoryPersonStateStore):
        pytest.skip("DynamoDB item layout")
    legacy = state()
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": "PERSON#acme#7"},
            "sk": {"S": "STATE"},
            "doc": {"S": legacy.model_dump_json(exclude={"optouts", "revision"})},
            "stamp": {"S": "2024-05-01T09:00:00.000000"},
        },
    )
    read = store.get("acme", 7)
    assert read.revision == 0
    store.put(read.model_copy(update={"change_stamp": "2024-05-01T09:30:00"}))
    assert store.get("acme", 7).revision == 1
    with pytest.raises(StaleWrite):
        store.put(read.model_copy(update={"change_stamp": "2024-05-01T08:00:00"}))


def test_a_refused_opt_out_update_is_an_error_not_a_missing_item(in_process_aws: str) -> None:
    """Any ValidationException on the opt-out update was read as "no OPTOUTS item yet": a request DynamoDB
    refused for another reason created the item over nothing, or reported an update as "replaced meanwhile".
    Only DynamoDB's "document path ... invalid for update" means the item is missing; anything else fails."""
    from botocore.awsrequest import AWSResponse
    from efficy_sync import aws

    create_pk_sk_table(TABLE, REGION)
    store = PersonStateStore(TABLE)
    assert store.record_optout("acme", 9, SLOT, optout())  # the real missing-path answer still creates the item

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "ValidationException", "Message": "One or more parameter values were invalid"}
        return AWSResponse("", 400, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    ddb = aws.client("dynamodb")
    ddb.meta.events.register("before-call.dynamodb.UpdateItem", refuse, unique_id="refuse")
    try:
        with pytest.raises(ddb.exceptions.ClientError, match="parameter values were invalid"):
            store.record_optout("acme", 10, SLOT, optout())
        with pytest.raises(ddb.exceptions.ClientError, match="parameter values were invalid"):
            store.update_optout("acme", 9, SLOT, optout(awaiting_writeback=False), expected_at=T1)
    finally:
        ddb.meta.events.unregister("before-call.dynamodb.UpdateItem", unique_id="refuse")
    assert store.get("acme", 10) is None  # nothing created on a refusal
