"""A person's consents read back from APSIS One (existing_optouts.held_optouts, ApsisClient._consent_held) in
shapes our simulator never answers: consents under another key, none at all, the type under consent_type or
spelled OPT_OUT, a short channel name, one page of several. Read as "no consents", the first opt-in overwrote
an opt-out APSIS held. The real PersonSyncer and ApsisClient over HTTP against the APSIS simulator, whose
GET of the consents is replaced by a fault rule (the opt-out really is held in the simulator)."""

from __future__ import annotations

import contextlib
import json

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.config import config_from_dict
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS, RAW, apsis_sim, person  # noqa: F401
from tests.memory_store import MemoryPersonStateStore

EMAIL = "com.apsis1.channels.email"
CONSENTS_GET = r"^/v2/audience/keyspaces/[^/]+/profiles/7/sections/[^/]+/consents$"


def held(sim: ApsisSimulator) -> str | None:
    profile = sim.get_profile(CRM, "7") or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


@pytest.mark.parametrize(
    "answer",
    [
        # control: the documented shape (passes)
        {"items": [{"topic_discriminator": NEWS, "channel_discriminator": EMAIL, "type": "opt-out"}]},
        # no "items" key at all: the client's _items defaults it to [] ("an answer without a readable list is
        # unreadable", says its own docstring)
        {"consents": [{"topic_discriminator": NEWS, "channel_discriminator": EMAIL, "type": "opt-out"}]},
        {},
        # the spellings apsis_export.consent_entry already reads (type under consent_type, other case,
        # underscores, a short channel name) -- held_optouts compares exact strings and skips them
        {"items": [{"topic_discriminator": NEWS, "channel_discriminator": EMAIL, "consent_type": "opt-out"}]},
        {"items": [{"topic_discriminator": NEWS, "channel_discriminator": EMAIL, "type": "OPT_OUT"}]},
        {"items": [{"topic_discriminator": NEWS, "channel_discriminator": "email", "type": "opt-out"}]},
        # the topic in another case than the mapping's (APSIS's case-sensitivity is not documented: the safe side)
        {"items": [{"topic_discriminator": NEWS.upper(), "channel_discriminator": EMAIL, "type": "opt-out"}]},
        # one page of several (apsis_export.parse_export refuses this shape; _items reads it as the whole list)
        {"items": [], "links": {"next": "/v2/audience/keyspaces/x/profiles/7/sections/s/consents?page=2"}},
        # paging said another way (paging is not documented): a flag, or a count above the items listed
        {"items": [], "has_more": True},
        {"items": [], "hasMore": "true"},
        {"items": [], "total": 1},
        {"items": [], "total_count": "1"},
        # continuation in the other common spellings: camelCase tokens, an OData or HAL link, a paging block
        {"items": [], "continuationToken": "c2"},
        {"items": [], "nextPageToken": "c2"},
        {"items": [], "@odata.nextLink": "/v2/audience/keyspaces/x/profiles/7/sections/s/consents?$skip=100"},
        {"items": [], "_links": {"next": {"href": "/v2/audience/keyspaces/x/profiles/7/sections/s/consents?p=2"}}},
        {"items": [], "pagination": {"next_page": 2}},
        {"items": [], "meta": {"has_more": True}},
        {"items": [], "totalItems": 1},
    ],
    ids=[
        "control-documented",
        "consents-key",
        "empty-object",
        "consent_type",
        "OPT_OUT",
        "short-channel",
        "topic-other-case",
        "paged",
        "has_more",
        "hasMore-text",
        "total",
        "total_count-text",
        "continuationToken",
        "nextPageToken",
        "odata-nextLink",
        "hal-links",
        "pagination-block",
        "meta-block",
        "totalItems",
    ],
)
def test_an_opt_out_apsis_holds_is_never_overwritten_by_a_first_opt_in(apsis_sim: ApsisSimulator, answer) -> None:
    store = MemoryPersonStateStore()
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    unmapped = config_from_dict({**RAW, "consent_mappings": []})
    PersonSyncer(unmapped, apsis, store, email_lookup=lambda a: []).sync(7, person(7), None)  # before the mapping
    apsis.set_consent("7", NEWS, "email", "opt-out")  # made in APSIS (another connector, the API)
    assert held(apsis_sim) == "opt-out"

    apsis_sim.add_fault(
        path_regex=CONSENTS_GET, method="GET", status=200, body=json.dumps(answer),
        content_type="application/json", count=10,
    )  # fmt: skip
    mapped = PersonSyncer(CFG, apsis, store, email_lookup=lambda a: [])
    with contextlib.suppress(ApsisUnavailable):  # refusing to decide on an answer it cannot read: retried
        mapped.sync(7, person(7, "2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    assert held(apsis_sim) == "opt-out", "a first opt-in overwrote the opt-out APSIS held"


@pytest.mark.parametrize("spelling", [{"type": "OPT-OUT"}, {"consent_type": "opt-out"}, {"type": "opt_out"}])
def test_a_409_on_an_opt_out_apsis_already_holds_is_unchanged_whatever_the_spelling(
    apsis_sim: ApsisSimulator, spelling
) -> None:
    """set_consent reads the consents back after a 409 (_consent_held) with the same exact-string comparison:
    an opt-out APSIS holds, spelled as apsis_export.consent_entry already accepts, is called "refused"
    (ConsentRefused: the person's failure, acknowledged and shown) instead of "unchanged"."""
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    apsis.create_profile("7")
    apsis.set_consent("7", NEWS, "email", "opt-out")
    item = {"topic_discriminator": NEWS, "channel_discriminator": EMAIL, **spelling}
    apsis_sim.add_fault(
        path_regex=CONSENTS_GET, method="GET", status=200, body=json.dumps({"items": [item]}),
        content_type="application/json", count=5,
    )  # fmt: skip
    assert apsis.set_consent("7", NEWS, "email", "opt-out") == "unchanged"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body>404 Not Found</body></html>", "text/html"),
        ("", "text/plain"),
        ("<Error/>", "application/xml"),
        ('{"message": "Not Found"}', "application/json"),  # an API gateway's own answer
    ],
    ids=["html", "empty", "xml", "gateway-json"],
)
def test_a_404_that_is_not_apsis_answer_is_no_proof_the_profile_is_missing(
    apsis_sim: ApsisSimulator, body: str, content_type: str
) -> None:
    """A proxy's or gateway's 404 page read as "no such profile, it holds nothing": the first opt-in went out
    unread over the opt-out APSIS held. Only APSIS's own answer (problem+json) says the profile is missing."""
    store = MemoryPersonStateStore()
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    unmapped = config_from_dict({**RAW, "consent_mappings": []})
    PersonSyncer(unmapped, apsis, store, email_lookup=lambda a: []).sync(7, person(7), None)
    apsis.set_consent("7", NEWS, "email", "opt-out")

    apsis_sim.add_fault(
        path_regex=CONSENTS_GET, method="GET", status=404, body=body, content_type=content_type, count=10
    )
    with pytest.raises(ApsisUnavailable):  # the integration's failure: retried, never acknowledged
        apsis.consents_if_profile("7")
    mapped = PersonSyncer(CFG, apsis, store, email_lookup=lambda a: [])
    with contextlib.suppress(ApsisUnavailable):
        mapped.sync(7, person(7, "2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    assert held(apsis_sim) == "opt-out", "a first opt-in overwrote the opt-out APSIS held"


def test_apsis_own_404_says_the_profile_is_missing(apsis_sim: ApsisSimulator) -> None:
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    assert apsis.consents_if_profile("404404") is None  # the simulator's problem+json 404
    apsis.create_profile("7")
    assert apsis.consents_if_profile("7") == []


PROFILE_V1 = r"^/audience/keyspaces/[^/]+/profiles/7$"
ATTRIBUTES_V2 = r"^/v2/audience/keyspaces/[^/]+/profiles/7/sections/[^/]+/attributes$"


def test_a_proxy_404_is_no_proof_a_profile_is_gone_for_a_delete_or_a_patch(apsis_sim: ApsisSimulator) -> None:
    """Read as "already gone", a delete was acknowledged while the profile stayed; read as "missing", a patch
    created the profile again."""
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    apsis.create_profile("7")
    page = "<html><body>404 Not Found</body></html>"
    apsis_sim.add_fault(
        path_regex=PROFILE_V1, method="DELETE", status=404, body=page, content_type="text/html", count=10
    )
    with pytest.raises(ApsisUnavailable):
        apsis.delete_profile("7")
    assert apsis_sim.get_profile(CRM, "7") is not None
    apsis_sim.add_fault(
        path_regex=ATTRIBUTES_V2, method="PATCH", status=404, body=page, content_type="text/html", count=10
    )
    with pytest.raises(ApsisUnavailable):
        apsis.patch_attributes("7", {"com.apsis1.attributes.firstname": "Jo"})
    apsis_sim.clear_faults()
    assert apsis.delete_profile("7") is True
    assert apsis.delete_profile("7") is False  # APSIS's own 404: gone
