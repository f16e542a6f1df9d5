"""The real-time worker sent a first opt-in to APSIS One, then storing the person's state failed with a DynamoDB
error that is not a condition (throttling past the SDK's retries, a 5xx, no answer). The message was retried,
but by then the CRM had taken the person out of the CRM profile: the retry read no stored state, decided
"never opted in: nothing to withdraw", and APSIS One kept the opt-in for good. The write-ahead (the opt-in's
slot stored as unknown before the call) lets the retry withdraw it.

The real BatchWorker and PersonSyncer, the real PersonStateStore on moto (in process), the APSIS One simulator
over HTTP through the real ApsisClient."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync.changes import ContactChange
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.state import PersonState
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.sync import PersonSyncer
from efficy_sync.worker import BatchWorker
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS, person
from tests.support import create_pk_sk_table

KEY = 7


@pytest.fixture
def apsis_sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(client_id="putfail", client_secret="putfail-secret", rate_limits=False).start()
    yield sim
    sim.stop()


class ThrottledAfterSend(PersonStateStore):
    """The state table refuses the state write that follows the APSIS calls (the one recording the opt-in as
    sent), once, as DynamoDB does once the SDK's retries ran out."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.failures = 1

    def put(self, state: PersonState) -> None:
        if self.failures and state.consents.get(f"{NEWS}|email") == "opt-in":
            self.failures -= 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}}, "PutItem"
            )
        super().put(state)


def consent(sim: ApsisSimulator) -> str | None:
    profile = sim.get_profile(CRM, str(KEY)) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


@pytest.mark.parametrize("stored_before", [False, True], ids=["new-person", "known-person"])
def test_an_opt_in_sent_before_a_failed_state_write_is_withdrawn_when_the_crm_opts_out(
    in_process_aws: str, apsis_sim: ApsisSimulator, stored_before: bool
) -> None:
    create_pk_sk_table("state", in_process_aws)
    store = ThrottledAfterSend("state")
    apsis = ApsisClient(apsis_sim.url, "putfail", "putfail-secret", section=CFG.apsis.section, policy=FAST)
    crm: dict[str, Any] = {"person": {**person(KEY, "2024-05-01T08:00:00"), "profiles": []}}
    worker = BatchWorker(
        get_config=lambda _: CFG,
        build_syncer=lambda cfg: PersonSyncer(cfg, apsis, store, email_lookup=lambda address: []),
        get_persons=lambda cfg, keys, fields: {KEY: dict(crm["person"])},
        states=store,
    )
    change = ContactChange(integration_id=CFG.integration_id, person_key=KEY, operation="Update")
    if stored_before:  # synced once already, in no CRM profile
        worker.prefetch([change]).apply(change)
        assert store.get(CFG.integration_id, KEY) is not None and consent(apsis_sim) is None

    # 1. the person joins CRM profile 12: the opt-in reaches APSIS One, the state write after it fails
    crm["person"] = {**person(KEY, "2024-05-01T09:00:00"), "profiles": [12]}
    with pytest.raises(ClientError):
        worker.prefetch([change]).apply(change)
    assert consent(apsis_sim) == "opt-in"

    # 2. before the retry the CRM takes the person out of profile 12 again
    crm["person"] = {**person(KEY, "2024-05-01T09:10:00"), "profiles": []}

    # 3. the retried message refetches the person
    worker.prefetch([change]).apply(change)

    stored = store.get(CFG.integration_id, KEY)
    assert consent(apsis_sim) == "opt-out", (
        f"the CRM took person {KEY} out of the profile; APSIS One still holds the opt-in the failed attempt sent "
        f"(stored consents {stored.consents if stored else None})"
    )
    assert stored is not None and stored.consents[f"{NEWS}|email"] == "opt-out"


def test_a_new_person_whose_calls_were_all_refused_keeps_no_state(
    in_process_aws: str, apsis_sim: ApsisSimulator
) -> None:
    """The write-ahead stands for a person never stored; when APSIS refused every call (credentials: about the
    integration, not the person), it is removed again: a person never synced keeps no state (health, explain)."""
    from efficy_sync.clients.errors import ApiError

    create_pk_sk_table("state", in_process_aws)
    store = PersonStateStore("state")
    apsis = ApsisClient(apsis_sim.url, "putfail", "putfail-secret", section=CFG.apsis.section, policy=FAST)
    apsis_sim.add_fault(path_regex=rf"/profiles/{KEY}/", status=403, count=10, body="{}")
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    with pytest.raises(ApiError):
        syncer.sync(KEY, {**person(KEY, "2024-05-01T09:00:00"), "profiles": [12]}, None)
    assert store.get(CFG.integration_id, KEY) is None
