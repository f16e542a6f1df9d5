"""PersonSyncer's consent safety around opt-outs and concurrency, and the e-mail change rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from efficy_sync.clients.errors import ApiError, ApsisUnavailable, RejectedValue, TransientError
from efficy_sync.config import EMAIL_ATTRIBUTE, config_from_dict
from efficy_sync.consent import OptOutRecord
from efficy_sync.explain import explain, render_explain
from efficy_sync.state import UNSURE_CHANGE, PersonState, value_hash
from efficy_sync.sync import PersonSyncer, log_fields

from tests.memory_store import MemoryPersonStateStore

NEWS = "usercreated.topics.news-ab12"
SLOT = f"{NEWS}|email"
CFG = config_from_dict(
    {
        "integration_id": "acme",
        "efficy": {"base_url": "https://crm.example.com/crm", "api_key_secret": "x/e", "webhook_secret_secret": "x/w"},
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
        "tags": {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}]},
    }
)
NOW = "2024-05-01T15:00:00Z"


@dataclass
class FakeApsis:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_on: dict[str, ApiError] = field(default_factory=dict)
    before_call: Any = None

    def _call(self, kind: str, detail: Any) -> None:
        if self.before_call is not None:
            self.before_call(kind)
        if kind in self.fail_on:
            raise self.fail_on.pop(kind)
        self.calls.append((kind, detail))

    section: str = "com.apsis1.sections.default"
    keyspace: str = "com.apsis1.keyspaces.crm-id"

    def list_sections(self) -> list[dict[str, Any]]:
        return [{"discriminator": self.section}]

    def list_keyspaces(self) -> list[dict[str, Any]]:
        return [{"discriminator": self.keyspace}]

    def create_profile(self, key: str) -> bool:
        self._call("create", key)
        return True

    def patch_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        self._call("attributes", attributes)

    def create_with_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        """APSIS's one-call create + attributes (v1 PATCH), recorded as the two steps it stands for."""
        self.create_profile(key)
        self.patch_attributes(key, attributes)

    def set_consent(self, key: str, topic: str, channel: str, consent_type: str, **_: Any) -> str:
        self._call("consent", consent_type)
        return "updated"

    def patch_tags(self, key: str, tags: dict[str, bool]) -> None:
        self._call("tags", tags)

    def get_consents(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]]:
        return []  # holds no opt-out we did not hear of (existing_optouts.py)

    def consents_if_profile(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]] | None:
        return self.get_consents(key, consent_types)

    def delete_profile(self, key: str) -> bool:
        self._call("delete", key)
        return True


def person(key: int = 7, stamp: str = "2024-05-01T10:00:00", **fields: Any) -> dict[str, Any]:
    return {"K_CONTACT": key, "EMAIL1": f"p{key}@example.com", "D_CHANGE": stamp, "profiles": [12], **fields}


@pytest.fixture
def store() -> MemoryPersonStateStore:
    return MemoryPersonStateStore()


def syncer(store: MemoryPersonStateStore, apsis: FakeApsis, lookup: Any = None) -> PersonSyncer:
    return PersonSyncer(CFG, apsis, store, email_lookup=lookup or (lambda address: []), clock=lambda: NOW)


def synced(store: MemoryPersonStateStore, key: int = 7, **fields: Any) -> None:
    syncer(store, FakeApsis()).sync(key, person(key, **fields), store.get("acme", key))


# ---- opt-outs ------------------------------------------------------------------------------------------------


def test_opt_ins_we_send_are_time_stamped(store: MemoryPersonStateStore) -> None:
    synced(store)
    assert store.get("acme", 7).opted_in_at == {SLOT: NOW}


def test_a_confirmed_opt_out_is_retired_once_a_newer_crm_change_opts_in_again(store: MemoryPersonStateStore) -> None:
    synced(store, profiles=[])
    record = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis", awaiting_writeback=True)
    store.record_optout("acme", 7, SLOT, record)
    done = record.model_copy(
        update={"awaiting_writeback": False, "confirmed": True, "confirmed_stamp": "2024-05-01T11:00:01"}
    )
    store.update_optout("acme", 7, SLOT, done, expected_at=record.at)
    apsis = FakeApsis()
    syncer(store, apsis).sync(7, person(stamp="2024-05-01T11:00:01", profiles=[]), store.get("acme", 7))
    assert apsis.calls == []  # the echo of the write-back: nothing to send
    syncer(store, apsis).sync(7, person(stamp="2024-05-02T09:00:00"), store.get("acme", 7))
    assert ("consent", "opt-in") in apsis.calls
    after = store.get("acme", 7)
    assert after.optouts == {} and after.consents[SLOT] == "opt-in"
    assert not store.record_optout("acme", 7, SLOT, record)  # the same unsubscribe again: recognised


def test_no_opt_in_goes_out_if_an_opt_out_was_recorded_after_the_read(store: MemoryPersonStateStore) -> None:
    synced(store, profiles=[])
    read = store.get("acme", 7)
    store.record_optout(
        "acme", 7, SLOT, OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis", awaiting_writeback=True)
    )
    apsis = FakeApsis()
    outcome = syncer(store, apsis).sync(7, person(stamp="2024-05-01T12:00:00"), read)  # a member again, it says
    assert ("consent", "opt-in") not in apsis.calls
    assert outcome.result in ("synced", "unchanged")
    assert store.get("acme", 7).optouts[SLOT].awaiting_writeback


def test_a_newer_sync_plans_again_against_what_a_concurrent_one_stored(store: MemoryPersonStateStore) -> None:
    """Both read the same state; the older read opts in and stores first; the newer read (not a member) must
    not overwrite that with 'nothing to withdraw'."""
    synced(store, profiles=[])
    read = store.get("acme", 7)
    first = FakeApsis()
    syncer(store, first).sync(7, person(stamp="2024-05-01T11:00:00"), read)
    assert ("consent", "opt-in") in first.calls
    second = FakeApsis()
    syncer(store, second).sync(7, person(stamp="2024-05-01T12:00:00", profiles=[]), read)
    assert ("consent", "opt-out") in second.calls
    assert store.get("acme", 7).consents[SLOT] == "opt-out"


def test_an_older_read_that_sent_something_marks_it_unknown_and_asks_for_a_retry(store: MemoryPersonStateStore) -> None:
    synced(store, profiles=[])
    read = store.get("acme", 7)
    syncer(store, FakeApsis()).sync(7, person(stamp="2024-05-01T12:00:00", profiles=[]), read)  # newer, nothing
    apsis = FakeApsis()
    newer = store.get("acme", 7)
    # the older read (a member) planned against `read`; the newer state is stored once its opt-in went out
    late = syncer(store, apsis)
    late._check_unchanged = lambda key, state, ops, **_: state  # type: ignore[method-assign]  (read and send raced)
    store_read = read.model_copy(update={"revision": newer.revision})  # as if read just before the newer put
    with pytest.raises(TransientError):
        late.sync(7, person(stamp="2024-05-01T11:00:00"), store_read)
    assert ("consent", "opt-in") in apsis.calls
    assert store.get("acme", 7).consents[SLOT] == "unknown"
    fixed = FakeApsis()
    syncer(store, fixed).sync(7, person(stamp="2024-05-01T12:00:00", profiles=[]), store.get("acme", 7))
    assert ("consent", "opt-out") in fixed.calls  # the retry withdraws it


def test_what_reached_apsis_before_a_failure_is_remembered(store: MemoryPersonStateStore) -> None:
    apsis = FakeApsis(fail_on={"tags": RejectedValue("tag refused", status=400)})
    outcome = syncer(store, apsis).sync(7, person(), None)
    assert outcome.result == "failed" and outcome.error_category == "rejected_value"
    state = store.get("acme", 7)
    assert state.exists_in_apsis and state.consents == {SLOT: "opt-in"} and state.opted_in_at == {SLOT: NOW}
    assert state.change_stamp == ""  # not applied: the same change passes again


def test_a_retryable_failure_is_raised_after_remembering_what_was_sent(store: MemoryPersonStateStore) -> None:
    synced(store, profiles=[])
    apsis = FakeApsis(fail_on={"tags": ApsisUnavailable("503")})
    with pytest.raises(ApsisUnavailable):
        syncer(store, apsis).sync(7, person(stamp="2024-05-01T11:00:00"), store.get("acme", 7))
    assert store.get("acme", 7).consents[SLOT] == "opt-in"


def test_a_retryable_failure_marks_only_what_its_call_carried_as_unknown(store: MemoryPersonStateStore) -> None:
    """A 503 or a timeout may come after APSIS applied the call: what it carried is marked unknown (sent again
    next time), nothing else is touched, and the stamp stays, so the retry of the same change still passes."""
    synced(store)
    before = store.get("acme", 7)
    apsis = FakeApsis(fail_on={"attributes": ApsisUnavailable("503")})
    with pytest.raises(ApsisUnavailable):
        syncer(store, apsis).sync(7, person(stamp="2024-05-01T11:00:00", NAME="x", EMAIL1="new@example.com"), before)
    after = store.get("acme", 7)
    assert after.change_stamp == before.change_stamp and after.consents == before.consents
    unsure = {name for name, digest in after.attribute_hashes.items() if digest != before.attribute_hashes.get(name)}
    # marked unsure, not dropped: the next sync sends the value again, or a clear; values we knew, so an address
    # change is still checked against other profiles (UNSURE_CHANGE and the hash we knew)
    assert unsure and all(
        after.attribute_hashes[name] == UNSURE_CHANGE + before.attribute_hashes[name] for name in unsure
    )
    assert after.last_outcome == before.last_outcome


# ---- e-mail changes --------------------------------------------------------------------------------------------


def test_an_unchanged_or_first_address_costs_no_look_up(store: MemoryPersonStateStore) -> None:
    looked: list[str] = []
    syncer(store, FakeApsis(), lambda a: looked.append(a) or []).sync(7, person(), None)
    syncer(store, FakeApsis(), lambda a: looked.append(a) or []).sync(
        7, person(stamp="2024-05-01T11:00:00"), store.get("acme", 7)
    )
    assert looked == []


def test_a_new_address_is_pushed_and_the_consents_stay_with_the_person(store: MemoryPersonStateStore) -> None:
    synced(store)
    looked: list[str] = []
    apsis = FakeApsis()
    outcome = syncer(store, apsis, lambda a: looked.append(a) or [7]).sync(
        7, person(stamp="2024-05-01T11:00:00", EMAIL1="new@example.com"), store.get("acme", 7)
    )
    assert looked == ["new@example.com"]
    assert apsis.calls == [("attributes", {EMAIL_ATTRIBUTE: "new@example.com"})]  # no consent call: per profile
    assert outcome.notices == [] and store.get("acme", 7).email_conflict is None


def test_a_new_address_another_profile_holds_is_held_back_and_reported(store: MemoryPersonStateStore) -> None:
    synced(store, 8, EMAIL1="shared@example.com")  # person 8's profile has the address
    synced(store, 9, EMAIL1="other@example.com")
    synced(store)
    apsis = FakeApsis()
    lookup = lambda address: [7, 8, 9, 10]  # noqa: E731  (9: another address pushed; 10: never synced)
    outcome = syncer(store, apsis, lookup).sync(
        7, person(stamp="2024-05-01T11:00:00", EMAIL1="shared@example.com"), store.get("acme", 7)
    )
    assert apsis.calls == [("attributes", {EMAIL_ATTRIBUTE: None})]  # the old address goes; nothing merged
    state = store.get("acme", 7)
    assert state.email_conflict is not None and state.email_conflict.other_profiles == ["8"]
    assert state.email_conflict.address == "s***@example.com"
    assert state.error_category == "email_conflict" and "s***@example.com" in (state.error_detail or "")
    assert outcome.notices == ["email_conflict"] and log_fields(outcome)["notices"] == ["email_conflict"]
    assert "shared@" not in str(state.model_dump()) and "shared@" not in str(log_fields(outcome))
    report = render_explain(explain(CFG, person(stamp="2024-05-01T11:00:00", EMAIL1="shared@example.com"), state))
    assert "email_conflict" in report and "shared@" not in report

    # still held back on the next change; pushed once person 8's profile lets go of the address
    again = FakeApsis()
    syncer(store, again, lookup).sync(7, person(stamp="2024-05-01T12:00:00", EMAIL1="shared@example.com"), state)
    assert again.calls == [] and store.get("acme", 7).email_conflict is not None
    synced(store, 8, EMAIL1="moved@example.com", stamp="2024-05-01T12:30:00")
    freed = FakeApsis()
    syncer(store, freed, lookup).sync(
        7, person(stamp="2024-05-01T13:00:00", EMAIL1="shared@example.com"), store.get("acme", 7)
    )
    assert freed.calls == [("attributes", {EMAIL_ATTRIBUTE: "shared@example.com"})]
    resolved = store.get("acme", 7)
    assert resolved.email_conflict is None and resolved.error_category is None
    assert resolved.attribute_hashes[EMAIL_ATTRIBUTE] == value_hash("shared@example.com")


def test_dry_run_reports_the_conflict_without_writing(store: MemoryPersonStateStore) -> None:
    synced(store, 8, EMAIL1="shared@example.com")
    synced(store)
    before = store.get("acme", 7)
    dry = PersonSyncer(CFG, FakeApsis(), store, dry_run=True, email_lookup=lambda a: [8])
    outcome = dry.sync(7, person(stamp="2024-05-01T11:00:00", EMAIL1="shared@example.com"), before)
    assert outcome.notices == ["email_conflict"] and outcome.result == "dry_run"
    assert store.get("acme", 7) == before.model_copy(update={"revision": before.revision})


def test_states_are_plain_models() -> None:
    state = PersonState(integration_id="acme", person_key="7", consents={SLOT: "unknown"})
    assert PersonState.model_validate_json(state.model_dump_json()).consents == {SLOT: "unknown"}


# ---- writes ----------------------------------------------------------------------------------------------------


def test_an_unchanged_re_sync_stores_nothing_but_a_newer_stamp_is_stored(store: MemoryPersonStateStore) -> None:
    synced(store)
    first = store.get("acme", 7)
    apsis = FakeApsis()
    outcome = syncer(store, apsis).sync(7, person(7), first)
    assert outcome.result == "unchanged" and apsis.calls == []
    assert store.get("acme", 7).revision == first.revision, "an unchanged re-sync wrote the state again"

    # Same data, a newer Efficy change stamp: stored, so an older read can no longer pass the stamp check.
    syncer(store, FakeApsis()).sync(7, person(7, stamp="2024-05-01T12:00:00"), first)
    after = store.get("acme", 7)
    assert after.revision == first.revision + 1 and after.change_stamp == "2024-05-01T12:00:00"


def test_an_unchanged_person_whose_last_attempt_failed_is_stored_as_synced(store: MemoryPersonStateStore) -> None:
    synced(store)
    failed = store.get("acme", 7)
    store.put(failed.model_copy(update={"last_outcome": "failed", "error_category": "apsis_unavailable"}))
    syncer(store, FakeApsis()).sync(7, person(7), store.get("acme", 7))
    after = store.get("acme", 7)
    assert after.last_outcome == "synced" and after.error_category is None
