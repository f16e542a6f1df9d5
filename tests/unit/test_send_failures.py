"""What a person's sync remembers when its APSIS calls stop part-way (send.py, state_updates.failed_state).

Found by a fault probe of the real-time path: a value APSIS refuses held a CRM opt-out back for good (the
refusal repeats at every sync); an opt-in whose call timed out after APSIS applied it was never withdrawn;
an error that is not an API error (the shared budget's DynamoDB item throttled) lost what had gone out before it.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync.budget import PacedApsis
from efficy_sync.clients.errors import ApsisUnavailable, RejectedValue, TransientError
from efficy_sync.sync import PersonSyncer

from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_optout_sync import CFG, NOW, SLOT, FakeApsis, person, syncer


def test_a_refused_attribute_does_not_hold_back_the_opt_out_of_the_same_change() -> None:
    store = MemoryPersonStateStore()
    syncer(store, FakeApsis()).sync(7, person(), None)
    assert store.get("acme", 7).consents[SLOT] == "opt-in"
    # the CRM user takes the person out of the newsletter profile and, in the same edit, types an address APSIS
    # refuses: the failure is the person's (acknowledged), so nothing would ever retry the opt-out
    apsis = FakeApsis(fail_on={"attributes": RejectedValue("invalid email", status=400)})
    outcome = syncer(store, apsis).sync(
        7, person(stamp="2024-05-01T11:00:00", profiles=[], EMAIL1="new7@example.com"), store.get("acme", 7)
    )
    assert outcome.result == "failed"
    assert ("consent", "opt-out") in apsis.calls, apsis.calls
    assert store.get("acme", 7).consents[SLOT] == "opt-out"  # and the state knows it went out


class TimesOutAfterApplying(FakeApsis):
    def set_consent(self, key: str, topic: str, channel: str, consent_type: str, **kw: Any) -> str:
        self.calls.append(("consent", consent_type))  # APSIS applied it ...
        raise ApsisUnavailable("APSIS set_consent: ReadTimeout after retries")  # ... but we never heard back


def test_an_opt_in_whose_call_timed_out_is_withdrawn_when_the_person_leaves_the_profile() -> None:
    store = MemoryPersonStateStore()
    with pytest.raises(ApsisUnavailable):
        PersonSyncer(CFG, TimesOutAfterApplying(), store, email_lookup=lambda a: [], clock=lambda: NOW).sync(
            7, person(), None
        )
    retry = FakeApsis()
    PersonSyncer(CFG, retry, store, email_lookup=lambda a: [], clock=lambda: NOW).sync(
        7, person(stamp="2024-05-01T11:00:00", profiles=[]), store.get("acme", 7)
    )
    assert ("consent", "opt-out") in retry.calls, (retry.calls, store.get("acme", 7))


class ThrottledAfter:
    """The shared budget, its DynamoDB UpdateItem throttled after `n` requests were taken."""

    def __init__(self, n: int) -> None:
        self.left = n

    def wait(self) -> None:
        if self.left == 0:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "UpdateItem")
        self.left -= 1


def test_an_opt_in_sent_before_an_error_of_another_kind_is_remembered_and_withdrawn_later() -> None:
    store = MemoryPersonStateStore()
    fake = FakeApsis()
    # create + attributes (one call), the opt-in, then the tag PATCH's budget take is throttled
    paced = PersonSyncer(CFG, PacedApsis(fake, ThrottledAfter(2)), store, email_lookup=lambda a: [], clock=lambda: NOW)
    with pytest.raises(TransientError):  # retried, as any outage
        paced.sync(7, person(), None)
    assert ("consent", "opt-in") in fake.calls
    assert store.get("acme", 7).consents.get(SLOT) == "opt-in"
    retry = FakeApsis()
    PersonSyncer(CFG, retry, store, email_lookup=lambda a: [], clock=lambda: NOW).sync(
        7, person(stamp="2024-05-01T11:00:00", profiles=[]), store.get("acme", 7)
    )
    assert ("consent", "opt-out") in retry.calls, retry.calls
