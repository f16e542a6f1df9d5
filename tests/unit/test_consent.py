"""Consent rules of DESIGN §2: every rule, then properties over random histories of CRM changes, APSIS opt-outs,
write-backs, lost webhooks and replayed snapshots."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from efficy_sync.config import config_from_dict
from efficy_sync.consent import OptOutRecord, compare_stamps, confirm, decide, is_newer, normalise_stamp
from efficy_sync.mapping import Desired, map_person
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBack
from efficy_sync.person_plan import SetConsent, plan_operations
from efficy_sync.state import PersonState
from efficy_sync.state_updates import apply_operations
from efficy_sync.store.persons import StaleWrite
from efficy_sync.sync import PersonSyncer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.memory_store import MemoryPersonStateStore
from tests.properties import examples

T1, T2, T3, T4 = "2024-05-01T10:00:00", "2024-05-01T11:00:00", "2024-05-01T12:00:00", "2024-05-01T13:00:00"


def unconfirmed(at: str = T2) -> OptOutRecord:
    return OptOutRecord(at=at, source="apsis-unsubscribe")


def confirmed(at: str = T2, stamp: str = T3) -> OptOutRecord:
    return OptOutRecord(at=at, source="apsis-unsubscribe", confirmed=True, confirmed_stamp=stamp)


# --- decide ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("last", [None, "opt-in", "opt-out"])
def test_member_is_opted_in(last):
    decision = decide(True, last, None, T1)
    assert decision.type == "opt-in"
    assert decision.reason == "member of the CRM profile"


@pytest.mark.parametrize("stamp", [T1, T3, "2099-01-01T00:00:00"])
def test_unconfirmed_apsis_opt_out_wins_over_membership_whatever_its_stamp(stamp):
    decision = decide(True, "opt-out", unconfirmed(), stamp)
    assert decision.type == "opt-out"
    assert "has not confirmed" in decision.reason


def test_confirmed_opt_out_then_newer_membership_is_a_new_crm_opt_in():
    decision = decide(True, "opt-out", confirmed(stamp=T3), T4)
    assert decision.type == "opt-in"
    assert "again" in decision.reason


@pytest.mark.parametrize("stamp", [T1, T3, "2024-05-01T12:00:00.000Z", ""])
def test_confirmed_opt_out_is_sticky_against_memberships_not_newer_than_the_confirmation(stamp):
    assert decide(True, "opt-out", confirmed(stamp=T3), stamp).type == "opt-out"


def test_leaving_the_profile_withdraws_a_pushed_opt_in():
    decision = decide(False, "opt-in", None, T1)
    assert decision.type == "opt-out"


def test_non_member_already_opted_out_stays_opted_out():
    assert decide(False, "opt-out", None, T1).type == "opt-out"


def test_never_a_first_time_opt_out():
    decision = decide(False, None, None, T1)
    assert decision.type is None
    assert "nothing to withdraw" in decision.reason


@pytest.mark.parametrize("record", [unconfirmed(), confirmed()])
def test_non_member_with_an_apsis_opt_out_is_opted_out(record):
    assert decide(False, None, record, T4).type == "opt-out"


@settings(max_examples=examples(200), deadline=None)
@given(
    member=st.booleans(),
    last=st.sampled_from([None, "opt-in", "opt-out"]),
    at=st.integers(0, 100),
    stamp=st.integers(0, 100),
)
def test_no_opt_in_while_an_opt_out_is_unconfirmed(member, last, at, stamp):
    assert decide(member, last, unconfirmed(_stamp(at)), _stamp(stamp)).type != "opt-in"


# --- confirm --------------------------------------------------------------------------------------------------


def test_confirm_when_efficy_shows_the_person_out_at_or_after_the_opt_out():
    assert confirm(unconfirmed(T2), False, T2) == confirmed(T2, T2)
    assert confirm(unconfirmed(T2), False, T3) == confirmed(T2, T3)


def test_no_confirmation_from_a_snapshot_older_than_the_opt_out():
    assert confirm(unconfirmed(T2), False, T1) == unconfirmed(T2)


def test_no_confirmation_while_still_a_member():
    assert confirm(unconfirmed(T2), True, T4) == unconfirmed(T2)


def test_confirmed_records_keep_their_first_confirmation():
    assert confirm(confirmed(T2, T3), False, T4) == confirmed(T2, T3)
    assert confirm(None, False, T4) is None


def test_confirmation_is_measured_against_the_efficy_stamp_when_known():
    # Efficy's clock may lag APSIS's: the stamp we last saw from Efficy is the reference, not the APSIS time
    record = OptOutRecord(at="2024-05-01T12:00:00Z", source="apsis-unsubscribe", efficy_stamp=T1)
    assert confirm(record, False, T2).confirmed
    assert not confirm(record, False, "2024-05-01T09:00:00").confirmed


# --- change stamps --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("2024-05-01T10:00:00", "2024-05-01T10:00:00.000", 0),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00", 0),
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00", 0),
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00", 0),
        ("2024-05-01T10:00:00.5", "2024-05-01T10:00:00.45", 1),
        ("2024-05-01T10:00:00.05", "2024-05-01T10:00:00.5", -1),
        ("2024-05-01T09:59:59.999", "2024-05-01T10:00:00", -1),
        ("", "2024-05-01T10:00:00", -1),
        (None, "", 0),
        ("2024-05-02", "2024-05-01T23:59:59", 1),
    ],
)
def test_compare_stamps(a, b, expected):
    assert compare_stamps(a, b) == expected
    assert compare_stamps(b, a) == -expected
    assert is_newer(a, b) is (expected > 0)


def test_normalise_stamp():
    assert normalise_stamp("2024-05-01T10:00:00Z") == "2024-05-01T10:00:00.000000"
    assert normalise_stamp("2024-05-01T10:00:00.12") == "2024-05-01T10:00:00.120000"
    assert normalise_stamp("garbage") == "garbage"


@pytest.mark.parametrize(
    ("day_first", "iso"),
    [
        ("05/02/2025 10:00:00", "2025-02-05T10:00:00.000000"),
        ("5/2/2025 10:00", "2025-02-05T10:00:00.000000"),
        ("30/12/1899 08:00", "1899-12-30T08:00:00.000000"),  # Efficy's empty date, as its S1 client shows it
        ("19/01/2025", "2025-01-19T00:00:00.000000"),
        ("05.02.2025 10:00:00", "2025-02-05T10:00:00.000000"),  # a server set to a German or Dutch locale
        ("2025/02/05 10:00", "2025-02-05T10:00:00.000000"),
    ],
)
def test_a_day_first_change_stamp_orders_as_the_same_instant_in_iso(day_first, iso):
    """Efficy's JSON-RPC may send D_CHANGE day-first: compared as text, 05/02 would sort before 19/01 and a
    newer CRM opt-out would look older than the stored state (person_plan.is_stale) and be dropped."""
    assert normalise_stamp(day_first) == iso
    assert is_newer("05/02/2025 10:00:00", "19/01/2025 10:00:00")
    assert is_newer("05/02/2025 10:00:00", "2025-01-19T10:00:00")
    assert not is_newer("19/01/2025 10:00:00", "2025-02-05T10:00:00")


def test_an_old_snapshot_stamped_with_dots_or_year_first_slashes_does_not_undo_a_confirmed_opt_out():
    """Compared as text, 20.12.2024 sorted after the confirmation's 15.01.2025, and any 2024/... after every ISO
    stamp: a membership snapshot older than the confirmation re-opted the person in."""
    assert not is_newer("20.12.2024 10:00", "15.01.2025 10:00")
    assert not is_newer("2024/12/20 10:00", "2025-01-15T10:00:00")
    assert is_newer("16.01.2025 10:00", "15.01.2025 10:00")
    assert normalise_stamp("05.02.25") == "05.02.25" and normalise_stamp("2025/2/30") == "2025/2/30"


def test_a_change_stamp_with_dashes_or_a_fraction_of_a_second_is_read_as_a_time():
    """A Netherlands locale writes D_CHANGE day-first with dashes (20-12-2024), and a server may add milliseconds
    (15.01.2025 10:00:00.500). Compared as text, 20-12-2024 sorted after the confirmation's 15-01-2025 and every
    dashed stamp before any ISO one: a membership snapshot older than an opt-out's confirmation re-opted the
    person in, and a newer one looked older."""
    assert normalise_stamp("05-02-2025 10:00:00") == "2025-02-05T10:00:00.000000"
    assert normalise_stamp("5-2-2025") == "2025-02-05T00:00:00.000000"
    assert normalise_stamp("05.02.2025 10:00:00.5") == "2025-02-05T10:00:00.500000"
    assert normalise_stamp("05/02/2025 10:00:00,123") == "2025-02-05T10:00:00.123000"
    assert not is_newer("20-12-2024 10:00", "15-01-2025 10:00")
    assert not is_newer("20-12-2024 10:00:00", "2025-01-15T10:00:00")
    assert is_newer("16-01-2025 10:00", "2025-01-15T10:00:00")
    assert is_newer("16.01.2025 10:00:00.500", "15.01.2025 10:00:00")
    assert normalise_stamp("05-02-25") == "05-02-25"


# --- properties over histories --------------------------------------------------------------------------------

TOPIC = "usercreated.topics.news"
KEY = f"{TOPIC}|email"
CFG = config_from_dict(
    {
        "integration_id": "prop",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/efficy",
            "webhook_secret_secret": "x/webhook",
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/apsis",
            "optout_token_secret": "x/optout",
        },
        "consent_mappings": [{"crm_profile": 12, "subscription": TOPIC, "channel": "email"}],
    }
)
EPOCH = datetime(2024, 5, 1, 8, 0, 0)


def _stamp(seconds: int, style: int = 0) -> str:
    """The same instant written the ways Efficy and APSIS write it."""
    moment = EPOCH + timedelta(seconds=seconds)
    return [
        moment.strftime("%Y-%m-%dT%H:%M:%S"),
        moment.strftime("%Y-%m-%dT%H:%M:%S.000"),
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ][style]


def _desired(member: bool, stamp: str) -> Desired:
    person = {"K_CONTACT": 7, "EMAIL1": "p@example.com", "profiles": [12] if member else [], "D_CHANGE": stamp}
    result = map_person(CFG, person)
    assert isinstance(result, Desired)
    return result


_crm = st.tuples(st.just("crm"), st.booleans(), st.sampled_from([True, True, True, False]))  # member?, delivered?
_replay = st.tuples(st.just("replay"), st.integers(0, 50), st.just(None))  # an older snapshot arrives again
events = st.lists(
    st.one_of(
        _crm,
        _crm,
        _replay,
        _replay,
        st.tuples(st.just("optout"), st.integers(0, 3), st.just(None)),  # unsubscribe in APSIS
        st.tuples(st.just("writeback"), st.booleans(), st.just(None)),  # Efficy removes the person: delivered?
        st.tuples(st.just("fullsync"), st.just(None), st.just(None)),  # the newest snapshot is read again
    ),
    min_size=2,
    max_size=30,
)


class _Efficy:
    """Efficy as the write-back sees it: the person's snapshots, oldest first; removing adds a newer one."""

    def __init__(self, change: Callable[[bool], tuple[bool, str]], snapshots: list[tuple[bool, str]]) -> None:
        self.change, self.snapshots = change, snapshots

    def find_contacts_by_email(self, email: str) -> list[int]:
        return [7]

    def remove_from_profile(self, key: int, profile_id: int) -> None:
        self.change(False)

    def get_persons(self, keys: list[int], fields: list[str] | None = None) -> dict[int, dict[str, Any]]:
        member, stamp = self.snapshots[-1]
        return {7: {"K_CONTACT": 7, "profiles": [12] if member else [], "D_CHANGE": stamp}}


@settings(max_examples=examples(300), deadline=None)
@given(history=events, styles=st.lists(st.integers(0, 2), min_size=1, max_size=5))
def test_apsis_opt_outs_are_never_overridden_until_confirmed(history, styles):
    """Drives the production path: the opt-out is recorded, written back and confirmed by `optout.WriteBack`'s
    steps through the person-state store (`record_optout`, `update_optout`); each sync reads the state back
    through the store (which attaches the live opt-outs with `merge_optouts`), plans, and writes the new state
    and the opt-out records it changed as `PersonSyncer` does."""
    store = MemoryPersonStateStore()
    clock = 0
    snapshots: list[tuple[bool, str]] = []  # what Efficy showed, oldest first
    ever_opted_in = False

    def stored() -> PersonState | None:
        return store.get(CFG.integration_id, 7)

    def efficy_change(member: bool) -> tuple[bool, str]:
        nonlocal clock
        clock += 60
        snapshots.append((member, _stamp(clock, styles[len(snapshots) % len(styles)])))
        return snapshots[-1]

    writeback = WriteBack(CFG, _Efficy(efficy_change, snapshots), store)
    slots, _ = writeback.slots(_optout_message(""))

    def process(snapshot: tuple[bool, str]) -> None:
        nonlocal ever_opted_in
        state = stored()
        desired = _desired(*snapshot)
        ops = plan_operations(desired, state)
        record = state.optouts.get(KEY) if state else None
        sent = [op.type for op in ops if isinstance(op, SetConsent)]
        if state is not None and compare_stamps(snapshot[1], state.change_stamp) < 0:
            assert ops == [], "a replayed older snapshot changed APSIS"
        if record is not None and not record.confirmed:
            assert "opt-in" not in sent, "opted in over an unconfirmed APSIS opt-out"
        if "opt-out" in sent:
            assert state is not None and state.consents.get(KEY) == "opt-in", "a first-time or repeated opt-out"
        new = apply_operations(state, desired, ops)
        try:
            store.put(new)
        except StaleWrite:
            return  # a newer state is stored: the sync drops this one, as PersonSyncer does
        PersonSyncer._store_optouts(SimpleNamespace(states=store), state, new)  # type: ignore[arg-type]
        ever_opted_in |= "opt-in" in sent
        after = stored()
        assert after is not None
        if KEY in after.optouts and not after.optouts[KEY].confirmed:
            assert after.consents.get(KEY) == "opt-out"

    def write_back(delivered: bool) -> None:
        """Steps 3 and 4 of the opt-out worker; the webhook of the removal may be lost (`delivered`)."""
        removal = writeback.remove(7, slots)
        if removal.done and not removal.superseded and writeback.confirm(7, removal.done, removal.live) and delivered:
            process(snapshots[-1])

    for kind, arg, delivered in history:
        if kind == "crm":
            snapshot = efficy_change(arg)
            if delivered:
                process(snapshot)
        elif kind == "optout" and (state := stored()) is not None and state.exists_in_apsis:
            clock += 60
            writeback.record_only(_optout_message(_stamp(clock, 3)))
        elif kind == "writeback" and (state := stored()) is not None and KEY in state.optouts:
            write_back(arg)
        elif kind == "replay" and snapshots:
            process(snapshots[arg % len(snapshots)])
        elif kind == "fullsync" and snapshots:
            process(snapshots[-1])

    if not snapshots:
        return
    write_back(False)  # the opt-out queue retries a pending write-back until it is done
    process(snapshots[-1])  # the next full sync reads the newest state
    member, _ = snapshots[-1]
    state = stored()
    assert state is not None
    record = state.optouts.get(KEY)
    if record is not None and not record.confirmed:
        assert member, "Efficy shows the person out, yet the opt-out is not confirmed"
        assert state.consents.get(KEY) == "opt-out"
    elif member:
        assert state.consents.get(KEY) == "opt-in"
    else:
        withdrawn = ever_opted_in or KEY in state.optouts  # an APSIS unsubscribe is an opt-out APSIS holds
        assert state.consents.get(KEY) == ("opt-out" if withdrawn else None)


def _optout_message(at: str) -> OptOutMessage:
    slot = SlotRef(topic=TOPIC, channel="email")
    return OptOutMessage(
        integration_id=CFG.integration_id, event="unsubscribe", profile_key=7, slots=[slot], occurred_at=at
    )
