"""A confirmed APSIS One opt-out was undone by re-targeting its consent mapping to another CRM profile.

The person unsubscribed from the newsletter in APSIS One; the write-back took them out of CRM profile 12 and
Efficy confirmed it. The admin then points the newsletter mapping at CRM profile 15 (the README's own example:
"the admin found it maps the wrong CRM profile"). The person has been in profile 15 all along, and no CRM user
re-added them anywhere, yet the next sync opted them in to the newsletter again: `consent.decide` took any
membership read after the confirmation as "member of the CRM profile again", whatever profile was mapped then.
The record now keeps the CRM profile it was confirmed for.
README: "no sync ever opts that person in again unless a CRM user explicitly does"; "a consent mapping added:
persons in the CRM profile are opted in, except those who opted out of that subscription in APSIS One"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import Stack, person, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

NEWS = "usercreated.topics.newsletter-ab12"


def news_consent(stack: Stack, key: int) -> str | None:
    profile = stack.profile(key) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


def optout_record(stack: Stack, iid: str, key: int) -> dict[str, Any]:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.names["StateTable"],
            Key={"pk": {"S": f"PERSON#{iid}#{key}"}, "sk": {"S": "OPTOUTS"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    records = item["records"]["M"] if item else {}
    record = records.get(f"{NEWS}|email", {}).get("M", {})
    return {name: next(iter(value.values())) for name, value in record.items()}


def idle(stack: Stack) -> None:
    wait_for(
        "idle queues",
        lambda: stack.queue_depth("ContactChangesQueue") == 0 and stack.queue_depth("OptOutQueue") == 0,
        timeout=60,
    )


def edited(stack: Stack, iid: str, key: int) -> None:
    record = {"table": 11000, "key": key, "operation": "Update", "fields": {"FIRSTNAME": "x"}}
    assert stack.signed_webhook([record], integration_id=iid).status_code == 202
    idle(stack)


def test_re_targeting_a_consent_mapping_does_not_undo_a_confirmed_apsis_opt_out(
    stack: Stack, key: int, tmp_path: Path
) -> None:
    iid = stack.create_integration(tmp_path)  # demo's mappings: newsletter <- CRM profile 12 (email)
    stack.seed([person(key, profiles=[12, 15])])  # no webhook to the shared demo integration
    edited(stack, iid, key)
    wait_for("opted in to the newsletter", lambda: news_consent(stack, key) == "opt-in", timeout=30)

    # the person unsubscribes in APSIS One; the automation calls our route
    body = {
        "event": "email.unsubscribe",
        "profile_key": str(key),
        "email": f"p{key}@example.com",
        "topic_discriminator": NEWS,
        "channel_discriminator": "com.apsis1.channels.email",
    }
    answer = stack.http.post(
        f"{stack.api_url}/integrations/{iid}/apsis/optout",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Apsis-Webhook-Token": stack.demo["optout_token"]},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    wait_for("the opt-out confirmed in Efficy", lambda: optout_record(stack, iid, key).get("confirmed") is True, 60)
    idle(stack)
    assert 12 not in set(stack.efficy_person(key)["profiles"]) and news_consent(stack, key) == "opt-out"

    # the admin re-targets the newsletter mapping at CRM profile 15 (nobody touches the person in Efficy)
    path = tmp_path / f"{iid}.yaml"
    data = yaml.safe_load(path.read_text())
    for mapping in data["consent_mappings"]:
        if mapping["subscription"] == NEWS:
            mapping["crm_profile"] = 15
    data["tags"]["profiles"] = [t for t in data["tags"]["profiles"] if t["crm_profile"] != 12]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    stack.cli("config", "apply", str(path), "--by", "tests", check=True)

    edited(stack, iid, key)  # any later change of the person (or a full sync) syncs them under the new version
    assert news_consent(stack, key) == "opt-out", (
        "the person who unsubscribed from the newsletter in APSIS One was opted in again by a config change"
    )
