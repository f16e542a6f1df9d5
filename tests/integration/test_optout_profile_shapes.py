"""How a real APSIS One Webhook node may name the person who opted out, besides our flat `profile_key`/`email`.

- The event shape contracts/apsis-one.md §8 writes down nests the profile: `{"profile": {"crm_id", "email",
  "mobile"}, "event_id", "section_discriminator", ...}`. The route refused it (400, "profile_key or email is
  required"), and the node does not resend a refused call: the opt-out was lost. The APSIS simulator sends it
  over HTTP (webhook `body_format: contract`); the body it delivered goes to the route's handler as received.
- A profile key of another keyspace (`keyspace_discriminator`): a mobile keyspace's key is all digits and was
  queued as a K_CONTACT, so the write-back would take whichever Efficy person has that number as key out of a
  CRM profile. It is set aside now: the e-mail address finds the person, or the call is refused.
"""

from __future__ import annotations

import io
import json

from efficy_sync.pii import hash_key
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_apsis_sim import (  # noqa: F401  (sim, api, receiver are fixtures)
    NEWSLETTER,
    SECTION,
    Api,
    Receiver,
    api,
    receiver,
    seed_person,
    sim,
)
from tests.integration.test_ingest_routes import (  # noqa: F401  (routes is the fixture)
    OPTOUT_TOKEN,
    Routes,
    call,
    optout_event,
    routes,
)
from tests.unit.consent_configs import NEWS

JSON = {"X-Apsis-Webhook-Token": OPTOUT_TOKEN, "Content-Type": "application/json"}


def post(routes: Routes, body: dict) -> tuple[int, dict]:
    return call(routes.optout, optout_event("POST", body=json.dumps(body).encode(), headers=JSON))


def queued(routes: Routes) -> list[tuple[int | None, str | None]]:
    return [(m["profile_key"], m["email"]) for m in routes.messages(routes.optout_queue)]


def test_the_contracts_event_shape_sent_by_the_simulator_is_queued(
    sim: ApsisSimulator, api: Api, receiver: Receiver, routes: Routes
) -> None:
    sim.configure_webhook(receiver.url, {"X-Apsis-Webhook-Token": OPTOUT_TOKEN}, body_format="contract")
    seed_person(api)
    sim.unsubscribe("42", NEWSLETTER)
    assert sim.flush_webhooks(5)
    [delivered] = receiver.calls
    body = delivered["body"]
    assert body["profile"]["crm_id"] == "42" and "profile_key" not in body  # the contract's shape, as sent
    assert body["section_discriminator"] == SECTION and body["event_id"]
    status, answer = call(routes.optout, optout_event("POST", body=delivered["raw"], headers=JSON))
    assert status == 202 and answer["accepted"] == 1, answer
    assert queued(routes) == [(42, "jo@example.com")]


def test_a_nested_profile_is_read_like_the_flat_fields(routes: Routes) -> None:
    event = {"event": "email.unsubscribe", "topic_discriminator": NEWS}
    assert post(routes, {**event, "profile": {"email": "jo@example.com"}})[0] == 202
    assert post(routes, {**event, "profile_key": "7", "profile": {"crm_id": 7, "mobile": None}})[0] == 202
    assert queued(routes) == [(None, "jo@example.com"), (7, None)]
    # two different persons named in one call: evidence for neither
    status, answer = post(routes, {**event, "profile_key": "7", "profile": {"crm_id": "8"}})
    assert (status, answer["field"]) == (400, "profile_key")
    assert queued(routes) == []


def test_a_key_of_another_keyspace_is_never_taken_for_a_k_contact(routes: Routes) -> None:
    sms = {"event": "sms.unsubscribe", "topic_discriminator": NEWS, "profile_key": "32470000001"}
    mobile = {**sms, "keyspace_discriminator": "com.apsis1.keyspaces.mobile"}
    status, answer = post(routes, mobile)  # nothing else names the person: refused, nobody opted out
    assert (status, answer["field"]) == (400, "profile_key")
    assert "32470000001" not in json.dumps(answer)
    assert queued(routes) == []
    assert post(routes, {**mobile, "email": "jo@example.com"})[0] == 202  # the address finds the person
    assert queued(routes) == [(None, "jo@example.com")]
    # in the e-mail keyspace the key is the address
    email_key = {
        "event": "email.unsubscribe",
        "topic_discriminator": NEWS,
        "profile_key": "jo@example.com",
        "keyspace_discriminator": "com.apsis1.keyspaces.email",
    }
    assert post(routes, email_key)[0] == 202
    assert queued(routes) == [(None, "jo@example.com")]
    # the integration's own keyspace (any case): the key is a K_CONTACT, as without the field
    ours = {**sms, "profile_key": "1001", "keyspace_discriminator": "com.apsis1.keyspaces.CRM-ID"}
    assert post(routes, ours)[0] == 202
    assert queued(routes) == [(1001, None)]


def test_a_spam_report_from_another_section_opts_nobody_out_here(routes: Routes) -> None:
    """email.abuse opts the person out of every subscription of its own section (contracts/apsis-one.md §6): one
    from another section's flow, sent to this integration's URL, took the person out of every mapped CRM profile
    here. The contract's event names its section; a topic's event is matched by its topic, as before."""
    abuse = {"event": "email.abuse", "profile_key": "1001", "section_discriminator": "usercreated.sections.other-1"}
    status, answer = post(routes, abuse)
    assert status == 202 and answer["accepted"] == 0 and "another section" in answer["ignored"], answer
    assert queued(routes) == []
    assert post(routes, {**abuse, "section_discriminator": SECTION.upper()})[1]["accepted"] >= 1  # ours
    assert post(routes, {k: v for k, v in abuse.items() if k != "section_discriminator"})[1]["accepted"] >= 1
    assert queued(routes) == [(1001, None), (1001, None)]


def test_an_ignored_opt_out_is_logged_for_the_operator_without_the_person(routes: Routes) -> None:
    """An ignored event is answered 202 (APSIS One never sends it again) and was an INFO line naming only the
    reason: no section, topic or person to check the automation against, and outside the warnings query."""
    section = "Other newsletter section"  # a display name where the discriminator belongs
    abuse = {"event": "email.abuse", "profile_key": "1001", "section_discriminator": section}
    routes.log.seek(0, io.SEEK_END)
    before = routes.log.tell()
    assert post(routes, abuse)[1]["accepted"] == 0
    assert post(routes, {"event": "email.abuse", "email": "jo@example.com", "section_discriminator": section})[0] == 202
    lines = [json.loads(line) for line in routes.log.getvalue()[before:].splitlines() if line.startswith("{")]
    ignored = [line for line in lines if line["message"] == "opt-out ignored"]
    assert [line["level"] for line in ignored] == ["WARNING", "WARNING"]
    by_key, by_address = ignored
    assert "another section" in by_key["reason"]
    assert (by_key["event"], by_key["channel"], by_key.get("topic"), by_key["section"]) == (
        "email.abuse",
        "email",
        None,
        section,
    )
    assert by_key["person"] == hash_key(1001) and by_key["correlation_id"] == "r-1"
    assert "person" not in by_address and by_address["address"] == "j***@example.com"
    text = routes.log.getvalue()[before:]
    assert "jo@example.com" not in text and '"1001"' not in text


def test_a_nested_crm_id_is_the_k_contact_whatever_keyspace_the_call_names(routes: Routes) -> None:
    """`profile.crm_id` is the person's CRM id (the crm-id attribute APSIS holds), not the key of the keyspace the
    flow's profile is in: a call naming its keyspace (the e-mail one, the mobile one) set it aside with that
    keyspace's key. Alone, it was then read as the e-mail address (400: the opt-out lost, the node does not
    resend); beside an address, the address alone found the person, and every contact holding it was opted out."""
    event = {
        "event": "email.unsubscribe",
        "topic_discriminator": NEWS,
        "keyspace_discriminator": "com.apsis1.keyspaces.email",
    }
    assert post(routes, {**event, "profile": {"crm_id": "42"}})[0] == 202
    assert post(routes, {**event, "profile": {"crm_id": 42, "email": "jo@example.com"}})[0] == 202
    # a mobile keyspace's key at the top is still set aside; the nested crm_id names the person
    mobile = {
        "event": "sms.unsubscribe",
        "topic_discriminator": NEWS,
        "profile_key": "32470000001",
        "keyspace_discriminator": "com.apsis1.keyspaces.mobile",
        "profile": {"crm_id": "42"},
    }
    status, answer = post(routes, mobile)
    assert status == 202 and "profile_key" not in answer.get("ignored", ""), answer
    assert queued(routes) == [(42, None), (42, "jo@example.com"), (42, None)]
    # a crm_id other than the integration keyspace's own key given at the top: two persons, evidence for neither
    ours = {**mobile, "profile_key": "7", "keyspace_discriminator": "com.apsis1.keyspaces.crm-id"}
    assert post(routes, ours)[0] == 400
    assert queued(routes) == []
