"""APSIS One's definition lists (sections, keyspaces, attributes, topics, tags) are evidence: a mapped name a
list does not hold makes a refusal the integration's (MappingGone), and a section or keyspace it does not hold
makes a profile's 404 the integration's too. Paging is not documented for them (contracts/apsis-one.md section
5), so one page of several was read as the whole list: a name on a later page looked gone, a person's refused
value failed the whole integration (a full sync fails on MappingGone) and a profile deleted in APSIS was
reported as a section to fix. A list that says there is more is no such evidence."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.apsis_scope import consents_or_gone
from efficy_sync.clients.errors import MappingGone, RejectedValue
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_apsis_client import FAST, FIRSTNAME, SECTION

PROBLEM = json.dumps({"title": "Bad Request", "status": 400, "detail": "value refused"})


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="pg", client_secret="pg-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def _client(sim: ApsisSimulator) -> ApsisClient:
    return ApsisClient(sim.url, "pg", "pg-secret", section=SECTION, policy=FAST)


def _page(item: str) -> str:
    return json.dumps({"items": [{"discriminator": item, "name": item}], "next": "?page=2"})


def test_a_refused_value_stays_the_persons_when_the_attribute_list_is_one_page_of_several(sim) -> None:
    client = _client(sim)
    client.create_profile("1")
    sim.add_fault(path_regex="/attributes$", method="PATCH", status=400, count=1, body=PROBLEM,
                  content_type="application/problem+json")  # fmt: skip
    sim.add_fault(path_regex="/attributes$", method="GET", status=200, count=1, body=_page("usercreated.other"),
                  content_type="application/json")  # fmt: skip
    with pytest.raises(RejectedValue) as caught:
        client.patch_attributes("1", {FIRSTNAME: "Ann"})
    assert not isinstance(caught.value, MappingGone), "a name on a later page read as gone"


def test_a_profile_404_is_not_read_as_a_section_gone_from_one_page_of_the_sections(sim) -> None:
    client = _client(sim)  # profile "9" does not exist: its consents read answers APSIS's own 404
    sim.add_fault(path_regex="/audience/sections$", method="GET", status=200, count=1, body=_page("other.section"),
                  content_type="application/json")  # fmt: skip
    with pytest.raises(Exception) as caught:
        consents_or_gone(client, "9")
    assert not isinstance(caught.value, MappingGone), "a section on a later page read as gone"
