"""A tag call answered 5xx (or timed out) may or may not have reached APSIS One. Stored as "set", the next sync
never sent it again and the tag stayed missing (seen on the real-time path under faults). The real
PersonSyncer and ApsisClient over HTTP against the APSIS simulator, which refuses the tag PATCH with 503s."""

from __future__ import annotations

import pytest
from efficy_sync.clients.errors import TransientError
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, apsis, apsis_sim, person  # noqa: F401
from tests.memory_store import MemoryPersonStateStore

TAGS_PATCH = r"/profiles/7/sections/[^/]+/tags$"


def test_a_tag_refused_with_503s_is_sent_again_by_the_next_sync(apsis_sim: ApsisSimulator, apsis) -> None:
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    apsis_sim.add_fault(path_regex=TAGS_PATCH, method="PATCH", status=503, count=10)
    with pytest.raises(TransientError):  # the change is retried (SQS redelivers it), never acknowledged
        syncer.sync(7, person(7), None)
    assert apsis_sim.get_profile(CRM, "7")["tags"] == []
    apsis_sim.clear_faults()

    syncer.sync(7, person(7), store.get(CFG.integration_id, 7))  # the redelivery

    assert apsis_sim.get_profile(CRM, "7")["tags"] == ["newsletter-readers"]
    assert store.get(CFG.integration_id, 7).tags_unknown == []
