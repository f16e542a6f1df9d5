"""The write-back worker: find, record first, remove, confirm, sync; and its Lambda's retry semantics."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from efficy_sync.clients.errors import EfficyBusinessError, EfficyUnavailable, TransientError
from efficy_sync.optout import (
    MembershipUnknown,
    OptOutMessage,
    OptOutUnmatched,
    SlotRef,
    StillMember,
    WriteBack,
    accept,
)
from efficy_sync.redelivery import retry_delay
from efficy_sync.sync import PersonSyncer

from tests.memory_store import MemoryPersonStateStore
from tests.support import WRITE_BACK_ENV, load_function
from tests.unit.consent_configs import EVENTS, NEWS, consent_config

CFG = consent_config(tags={"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}]})
AT = "2024-05-01T10:00:00.000Z"


@dataclass
class FakeEfficy:
    """Efficy's JSON-RPC as the write-back uses it; `log` shows the order of everything done."""

    store: MemoryPersonStateStore
    persons: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    _clock: Any = field(default_factory=lambda: itertools.count(1))

    def add(self, key: int, profiles: set[int], email: str = "") -> None:
        self.persons[key] = {"K_CONTACT": key, "EMAIL1": email or f"p{key}@example.com", "profiles": set(profiles)}
        self._stamp(key)

    def _stamp(self, key: int) -> None:
        self.persons[key]["D_CHANGE"] = f"2024-05-01T12:00:{next(self._clock):02d}.000"

    def _fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def find_contacts_by_email(self, email: str) -> list[int]:
        self.log.append("find")
        return [k for k, p in self.persons.items() if p["EMAIL1"] == email]

    def remove_from_profile(self, key: int, profile_id: int) -> None:
        recorded = sorted(self.store.get("acme", key).optouts) if self.store.get("acme", key) else []
        self.log.append(f"remove {key} {profile_id} recorded={recorded}")
        self._fail()
        if key not in self.persons:
            raise EfficyBusinessError("Cont record does not exist", code="RECORD_NOT_FOUND")
        if profile_id in self.persons[key]["profiles"]:
            self.persons[key]["profiles"].discard(profile_id)
            self._stamp(key)

    def get_persons(self, keys: list[int], fields: list[str] | None = None) -> dict[int, dict[str, Any]]:
        self.log.append("get")
        self._fail()
        return {
            k: {**self.persons[k], "profiles": sorted(self.persons[k]["profiles"])} for k in keys if k in self.persons
        }


@dataclass
class FakeApsis:
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def create_profile(self, key: str) -> bool:
        self.calls.append(("create", key))
        return True

    def patch_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        self.calls.append(("attributes", key))

    def create_with_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        """APSIS's one-call create + attributes (v1 PATCH), recorded as the two steps it stands for."""
        self.create_profile(key)
        self.patch_attributes(key, attributes)

    def set_consent(self, key: str, topic: str, channel: str, consent_type: str, **_: Any) -> str:
        self.calls.append(("consent", (key, topic, consent_type)))
        return "updated"

    def patch_tags(self, key: str, tags: dict[str, bool]) -> None:
        self.calls.append(("tags", tags))

    def get_consents(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]]:
        return []  # holds no opt-out we did not hear of (existing_optouts.py)

    def consents_if_profile(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]] | None:
        return self.get_consents(key, consent_types)

    def delete_profile(self, key: str) -> bool:
        return True


def message(
    profile_key: int | None = 7, email: str | None = None, slots: list[tuple[str, str]] | None = None, **kw: Any
) -> OptOutMessage:
    return OptOutMessage(
        integration_id="acme",
        event=kw.get("event", "email.unsubscribe"),
        profile_key=profile_key,
        email=email,
        slots=[SlotRef(topic=t, channel=c) for t, c in (slots or [(NEWS, "email")])],
        occurred_at=kw.get("at", AT),
    )


@pytest.fixture
def world() -> tuple[FakeEfficy, MemoryPersonStateStore, FakeApsis]:
    store = MemoryPersonStateStore()
    return FakeEfficy(store), store, FakeApsis()


def writeback(world: tuple[FakeEfficy, MemoryPersonStateStore, FakeApsis], sync: bool = True) -> WriteBack:
    efficy, store, apsis = world
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda a: []) if sync else None
    return WriteBack(CFG, efficy, store, syncer)


def test_records_first_then_removes_confirms_and_syncs(world: Any) -> None:
    efficy, store, apsis = world
    efficy.add(7, {12, 14})
    result = writeback(world).process(message())
    assert efficy.log[0] == f"remove 7 12 recorded=['{NEWS}|email']"  # recorded before Efficy was touched
    assert efficy.persons[7]["profiles"] == {14}
    record = store.get("acme", 7).optouts[f"{NEWS}|email"]
    assert record.confirmed and not record.awaiting_writeback
    assert record.confirmed_stamp == record.efficy_stamp == efficy.persons[7]["D_CHANGE"] == result.confirmed_stamps[7]
    assert (record.source, record.event, record.at) == ("apsis", "email.unsubscribe", AT)
    # the sync created the person at the write-back's stamp, opted in to events only, never to news
    assert ("consent", ("7", EVENTS, "opt-in")) in apsis.calls
    assert not any(c == ("consent", ("7", NEWS, "opt-in")) for c in apsis.calls)
    assert store.get("acme", 7).change_stamp == efficy.persons[7]["D_CHANGE"]


def test_abuse_removes_every_mapped_email_profile(world: Any) -> None:
    efficy, store, _ = world
    efficy.add(7, {12, 13, 14})
    writeback(world).process(message(slots=[(NEWS, "email"), (EVENTS, "email")], event="email.abuse"))
    assert efficy.persons[7]["profiles"] == {13}
    assert set(store.get("acme", 7).optouts) == {f"{NEWS}|email", f"{EVENTS}|email"}


def test_by_address_every_matching_contact_is_opted_out(world: Any) -> None:
    efficy, _, _ = world
    efficy.add(7, {12}, "shared@example.com")
    efficy.add(8, {12}, "shared@example.com")
    efficy.add(9, {12})
    result = writeback(world).process(message(None, "shared@example.com"))
    assert result.matched_by == "email" and result.several_contacts and result.persons == [7, 8]
    assert [efficy.persons[k]["profiles"] for k in (7, 8, 9)] == [set(), set(), {12}]


def test_an_address_nobody_has_fails_the_message(world: Any) -> None:
    with pytest.raises(OptOutUnmatched):
        writeback(world).process(message(None, "nobody@example.com"))


def test_an_efficy_failure_leaves_the_opt_out_recorded_and_the_retry_completes(world: Any) -> None:
    efficy, store, _ = world
    efficy.add(7, {12})
    efficy.failures.append(EfficyUnavailable("Efficy answered 503"))
    with pytest.raises(EfficyUnavailable):
        writeback(world).process(message())
    record = store.get("acme", 7).optouts[f"{NEWS}|email"]
    assert record.awaiting_writeback and not record.confirmed and efficy.persons[7]["profiles"] == {12}
    result = writeback(world).process(message())  # SQS delivers it again
    assert efficy.persons[7]["profiles"] == set() and result.recorded == {7: []}  # not recorded twice
    assert store.get("acme", 7).optouts[f"{NEWS}|email"].confirmed


def removed_before_confirm(world: Any) -> tuple[WriteBack, OptOutMessage, Any]:
    """Person 7 in profile 12, the opt-out found, recorded and removed in Efficy: steps 1-3, not yet confirmed."""
    efficy, _, _ = world
    efficy.add(7, {12})
    wb = writeback(world)
    msg = message()
    result = wb.find(msg)
    wb.record(7, msg, result)
    return wb, msg, wb.remove(7, result.slots)


def test_someone_adding_the_person_back_before_the_read_back_is_retried(world: Any) -> None:
    efficy, store, _ = world
    wb, msg, removal = removed_before_confirm(world)
    assert [s.key for s in removal.done] == [f"{NEWS}|email"]
    efficy.persons[7]["profiles"].add(12)  # a CRM user, a moment later
    with pytest.raises(StillMember):
        wb.confirm(7, removal.done, removal.live)
    assert not store.get("acme", 7).optouts[f"{NEWS}|email"].confirmed
    wb.process(msg)  # the retry: the unconfirmed opt-out wins, the person goes out again
    assert efficy.persons[7]["profiles"] == set() and store.get("acme", 7).optouts[f"{NEWS}|email"].confirmed


def test_an_answer_without_the_persons_profiles_never_confirms_the_removal(world: Any) -> None:
    """Efficy read back without readable profile rows (efficy_parsing leaves "profiles" out): membership is
    unknown, so the opt-out stays unconfirmed and the message is retried, as when the person is still a member."""
    efficy, store, _ = world
    wb, _, removal = removed_before_confirm(world)
    efficy.get_persons = lambda keys, fields=None: {7: {"K_CONTACT": 7, "D_CHANGE": "2024-05-01T12:00:59.000"}}
    with pytest.raises(MembershipUnknown) as raised:
        wb.confirm(7, removal.done, removal.live)
    assert isinstance(raised.value, TransientError)  # retried by the queue, never acknowledged as done
    record = store.get("acme", 7).optouts[f"{NEWS}|email"]
    assert record.awaiting_writeback and not record.confirmed


def test_a_retry_after_the_confirmation_does_not_remove_the_person_again(world: Any) -> None:
    """Confirmed, then a CRM user added the person back (an explicit opt-in), then the same message comes back
    (its sync had failed): it syncs, it does not undo the CRM user's change."""
    efficy, store, _ = world
    efficy.add(7, {12})
    writeback(world, sync=False).process(message())
    efficy.persons[7]["profiles"].add(12)
    efficy.log.clear()
    writeback(world, sync=False).process(message())
    assert efficy.persons[7]["profiles"] == {12}
    assert not any(line.startswith("remove") for line in efficy.log)
    assert store.get("acme", 7).optouts[f"{NEWS}|email"].confirmed


def test_a_person_deleted_in_efficy_keeps_the_record_and_ends_the_message(world: Any) -> None:
    _, store, _ = world
    result = writeback(world).process(message(profile_key=99))
    assert result.missing == [99]
    assert store.get("acme", 99).optouts[f"{NEWS}|email"].awaiting_writeback


def test_a_newer_recorded_opt_out_is_confirmed_but_not_replaced(world: Any) -> None:
    efficy, store, _ = world
    efficy.add(7, {12})
    writeback(world, sync=False).process(message(at="2024-05-01T11:00:00.000Z"))
    result = writeback(world, sync=False).process(message(at=AT))  # an older one, delivered late
    assert result.recorded == {7: []}
    assert store.get("acme", 7).optouts[f"{NEWS}|email"].at == "2024-05-01T11:00:00.000Z"


def test_a_late_duplicate_after_a_crm_re_add_changes_nothing(world: Any) -> None:
    efficy, store, apsis = world
    efficy.add(7, {12})
    writeback(world).process(message())
    efficy.persons[7]["profiles"].add(12)  # a CRM user adds the person back: an explicit opt-in
    efficy._stamp(7)
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda a: [])
    syncer.sync(7, efficy.get_persons([7])[7], store.get("acme", 7))
    assert ("consent", ("7", NEWS, "opt-in")) in apsis.calls[-3:]
    assert store.get("acme", 7).optouts == {}  # retired
    result = writeback(world).process(message())  # APSIS delivers the old unsubscribe once more
    assert result.superseded == [7] and efficy.persons[7]["profiles"] == {12}


def test_a_new_unsubscribe_with_a_bogus_old_time_after_a_crm_re_add_is_not_lost(world: Any) -> None:
    """The automation sends a time that is not the click's (a fixed date, say). Kept, it is older than the
    retired record of the first unsubscribe, so the new one passed for a late duplicate of it: acknowledged,
    never written back, and the next sync opted the person in again. The route replaces a time older than
    `apsis.optout_max_age_hours` by the receipt time, so the new unsubscribe is recorded and written back."""
    efficy, store, apsis = world
    efficy.add(7, {12})
    sent: list[OptOutMessage] = []
    token = "a-fake-token-for-tests"

    def unsubscribe(occurred_at: str, now: datetime) -> OptOutMessage:
        fields = {"event": "email.unsubscribe", "profile_key": "7", "topic_discriminator": NEWS}
        raw = json.dumps({**fields, "occurred_at": occurred_at}).encode()
        accept(CFG, {CFG.apsis.optout_token_header: token}, raw, token, sent.append, now=lambda: now)
        return sent[-1]

    writeback(world).process(unsubscribe(AT, datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)))
    efficy.persons[7]["profiles"].add(12)  # a CRM user adds the person back: an explicit opt-in
    efficy._stamp(7)
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda a: [])
    syncer.sync(7, efficy.get_persons([7])[7], store.get("acme", 7))
    assert store.get("acme", 7).optouts == {}  # retired
    second = unsubscribe("2001-01-01T00:00:00Z", datetime(2024, 5, 2, 9, 0, tzinfo=UTC))
    result = writeback(world).process(second)
    assert result.recorded == {7: [f"{NEWS}|email"]} and not result.superseded
    assert efficy.persons[7]["profiles"] == set()
    assert store.get("acme", 7).optouts[f"{NEWS}|email"].confirmed
    assert second.occurred_at == "2024-05-02T09:00:00.000Z"  # the receipt time


@pytest.mark.parametrize("zone", ["America/New_York", "unknown"])
def test_a_new_unsubscribe_in_local_time_west_of_utc_after_a_crm_re_add_is_not_lost(world: Any, zone: str) -> None:
    """The first unsubscribe came without a time: its record holds the receipt time, 14:00Z. A CRM user adds the
    person back; they unsubscribe again at 15:00Z and the node sends New York's local time without a zone,
    11:00 (EDT, UTC-4). Read as UTC, 11:00Z was older than the retired record: a late duplicate, acknowledged,
    never written back, and the next sync opted the person in again. Read in the account's zone
    (`apsis.optout_time_zone`), or as the latest it can mean when the zone is unknown, it is a new opt-out."""
    efficy, store, apsis = world
    cfg = CFG.model_copy(update={"apsis": CFG.apsis.model_copy(update={"optout_time_zone": zone})})
    efficy.add(7, {12})
    sent: list[OptOutMessage] = []
    token = "a-fake-token-for-tests"

    def unsubscribe(occurred_at: str | None, now: datetime) -> OptOutMessage:
        fields = {"event": "email.unsubscribe", "profile_key": "7", "topic_discriminator": NEWS}
        raw = json.dumps({**fields, "occurred_at": occurred_at}).encode()
        accept(cfg, {cfg.apsis.optout_token_header: token}, raw, token, sent.append, now=lambda: now)
        return sent[-1]

    writeback(world).process(unsubscribe(None, datetime(2024, 5, 1, 14, 0, tzinfo=UTC)))
    efficy.persons[7]["profiles"].add(12)  # a CRM user adds the person back: an explicit opt-in
    efficy._stamp(7)
    PersonSyncer(CFG, apsis, store, email_lookup=lambda a: []).sync(7, efficy.get_persons([7])[7], store.get("acme", 7))
    assert store.get("acme", 7).optouts == {}  # retired
    second = unsubscribe("2024-05-01 11:00:00", datetime(2024, 5, 1, 15, 0, 2, tzinfo=UTC))
    result = writeback(world).process(second)
    expected = "2024-05-01T15:00:02.000Z" if zone == "unknown" else "2024-05-01T15:00:00.000Z"  # unknown: receipt
    assert second.occurred_at == expected
    assert result.recorded == {7: [f"{NEWS}|email"]} and not result.superseded
    assert efficy.persons[7]["profiles"] == set()


def test_a_subscription_no_longer_mapped_is_recorded_not_written_back(world: Any) -> None:
    efficy, store, _ = world
    efficy.add(7, {12})
    result = writeback(world).process(message(slots=[("usercreated.topics.gone", "email"), (NEWS, "email")]))
    assert result.skipped_slots == ["usercreated.topics.gone|email"]
    assert efficy.persons[7]["profiles"] == set()
    gone = store.get("acme", 7).optouts["usercreated.topics.gone|email"]
    assert gone.at == AT and not gone.awaiting_writeback and not gone.confirmed


def test_the_route_s_record_replaces_one_a_sync_found_already_held_and_is_written_back(world: Any) -> None:
    """A sync read the opt-out in APSIS before the automation's call arrived (existing_optouts.py): the route's
    record, with its real time, still replaces it, so the person leaves the CRM profile as usual."""
    from efficy_sync.consent import OptOutRecord
    from efficy_sync.existing_optouts import EXISTING_AT, SOURCE

    efficy, store, _ = world
    efficy.add(7, {12})
    found = OptOutRecord(at=EXISTING_AT, source=SOURCE, recorded_at="2024-05-01T10:00:01.000Z")
    assert store.record_optout("acme", 7, f"{NEWS}|email", found)
    writeback(world).process(message())
    assert efficy.persons[7]["profiles"] == set()
    record = store.get("acme", 7).optouts[f"{NEWS}|email"]
    assert (record.at, record.source, record.confirmed) == (AT, "apsis", True)


def test_an_unmapped_opt_out_by_an_address_nobody_has_is_done_not_retried(world: Any) -> None:
    """Nobody to record it for, nothing to write back: not four hours of retries and a DLQ alarm."""
    result = writeback(world).process(message(None, "nobody@example.com", slots=[("usercreated.topics.gone", "email")]))
    assert result.persons == [] and result.skipped_slots == ["usercreated.topics.gone|email"]


def test_an_opt_out_of_an_unmapped_subscription_holds_when_a_mapping_is_added_later(world: Any) -> None:
    """Before, the route dropped it: the first sync that knew a new mapping opted the person in again."""
    efficy, store, apsis = world
    efficy.add(7, {12, 14})
    news_only = consent_config(profiles={(NEWS, "email"): 12})
    WriteBack(news_only, efficy, store, None).process(message(slots=[(EVENTS, "email")]))
    assert efficy.log == [] and efficy.persons[7]["profiles"] == {12, 14}  # nothing written back
    # the events mapping is added; the person is still in CRM profile 14, as they were before the unsubscribe
    person = {**efficy.get_persons([7])[7], "D_CHANGE": "2024-05-01T12:30:00.000"}
    PersonSyncer(CFG, apsis, store, email_lookup=lambda a: []).sync(7, person, store.get("acme", 7))
    consents = [c for kind, c in apsis.calls if kind == "consent"]
    assert ("7", EVENTS, "opt-in") not in consents and ("7", NEWS, "opt-in") in consents
    # a CRM user takes them out of the profile and, later, back in: that is the explicit opt-in
    out = {**person, "profiles": [12], "D_CHANGE": "2024-05-02T08:00:00.000"}
    PersonSyncer(CFG, apsis, store, email_lookup=lambda a: []).sync(7, out, store.get("acme", 7))
    back = {**person, "profiles": [12, 14], "D_CHANGE": "2024-05-03T08:00:00.000"}
    PersonSyncer(CFG, apsis, store, email_lookup=lambda a: []).sync(7, back, store.get("acme", 7))
    assert [c for kind, c in apsis.calls if kind == "consent"][-1] == ("7", EVENTS, "opt-in")


# ---- the Lambda: partial batch failures and a growing delay ----------------------------------------------------


@dataclass
class Context:
    function_name: str = "write-back"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:write-back"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class FakeSqs:
    visibility: list[tuple[str, int]] = field(default_factory=list)

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        self.visibility.append((ReceiptHandle, VisibilityTimeout))


@pytest.fixture
def handler_module(monkeypatch: pytest.MonkeyPatch, world: Any) -> Any:
    env = {**WRITE_BACK_ENV, "AWS_DEFAULT_REGION": "eu-west-1"}
    module = load_function("write_back", "write_back_app", env, monkeypatch)
    efficy, store, apsis = world
    sqs = FakeSqs()
    monkeypatch.setattr(module, "states", store)
    monkeypatch.setattr(module, "configs", type("Configs", (), {"get": staticmethod(lambda _id: CFG)})())
    monkeypatch.setattr(module, "efficy_client", lambda cfg, policy=None: efficy)
    monkeypatch.setattr(module, "apsis_client", lambda cfg: apsis)
    monkeypatch.setattr(module, "paced", lambda cfg, client: client)  # the shared budget lives in DynamoDB
    monkeypatch.setattr(module, "brief_client", lambda service: sqs)
    module.fake_sqs = sqs
    yield module
    from efficy_sync.settings import settings

    settings.cache_clear()


def sqs_record(message_id: str, body: str, receives: int) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receives)},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:optouts",
        "awsRegion": "eu-west-1",
    }


def test_only_the_failed_opt_out_comes_back_and_later_each_time(handler_module: Any, world: Any) -> None:
    efficy, _, _ = world
    efficy.add(7, {12})
    event = {
        "Records": [
            sqs_record("ok", message(7).model_dump_json(), 1),
            sqs_record("unknown-address", message(None, "nobody@example.com").model_dump_json(), 3),
            sqs_record("poison", "{not json", 1),
        ]
    }
    result = handler_module.handler(event, Context())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {"unknown-address", "poison"}  # retried, then dead-lettered: never dropped silently
    assert efficy.persons[7]["profiles"] == set()
    assert dict(handler_module.fake_sqs.visibility) == {
        "handle-unknown-address": retry_delay(3),
        "handle-poison": retry_delay(1),
    }


def test_a_failing_visibility_change_still_fails_the_item(handler_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(service: str) -> Any:
        raise RuntimeError("AccessDenied")

    monkeypatch.setattr(handler_module, "brief_client", denied)
    result = handler_module.handler({"Records": [sqs_record("x", json.dumps({}), 1)]}, Context())
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == ["x"]


def test_once_efficy_is_unreachable_the_rest_of_the_batch_is_put_back_at_once(handler_module: Any, world: Any) -> None:
    efficy, store, _ = world
    efficy.add(7, {12})
    efficy.add(8, {12})
    efficy.failures.append(EfficyUnavailable("Efficy did not answer"))
    event = {
        "Records": [sqs_record("a", message(7).model_dump_json(), 1), sqs_record("b", message(8).model_dump_json(), 1)]
    }
    result = handler_module.handler(event, Context())
    assert {f["itemIdentifier"] for f in result["batchItemFailures"]} == {"a", "b"}
    assert [line for line in efficy.log if line.startswith("remove")] == [f"remove 7 12 recorded=['{NEWS}|email']"]
    assert store.get("acme", 8).optouts[f"{NEWS}|email"].awaiting_writeback  # recorded all the same
    result = handler_module.handler(event, Context())  # the next delivery tries again
    assert result["batchItemFailures"] == [] and efficy.persons[8]["profiles"] == set()


def test_a_queued_opt_out_naming_the_topic_in_another_case_is_written_back_under_the_mappings_key(
    world: Any,
) -> None:
    """A message queued by the route before it matched topics without case (or by hand, from the DLQ): the
    write-back called the subscription unmapped and recorded it under a key no mapping reads."""
    efficy, store, _ = world
    efficy.add(7, {12, 14})
    result = writeback(world).process(message(slots=[(NEWS.upper(), "email")]))
    assert efficy.persons[7]["profiles"] == {14} and result.skipped_slots == []
    assert list(store.get("acme", 7).optouts) == [f"{NEWS}|email"]
