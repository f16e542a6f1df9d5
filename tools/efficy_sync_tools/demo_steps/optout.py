"""Demo step: a person unsubscribes in APSIS One and the opt-out flows back to Efficy.

The APSIS simulator plays the person (the unsubscribe link) and the automation (its Webhook node calls the
demo integration's opt-out route); the product records the opt-out, removes the person from the mapped CRM
profile in the Efficy simulator, confirms it, and the webhook Efficy sends for that removal costs no APSIS call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from efficy_sync_tools.testing import wait_for

KEYSPACE = "com.apsis1.keyspaces.crm-id"


def run(ready: dict[str, Any], say: Callable[[str], None], timeout: float) -> None:
    """Raises AssertionError (wrong outcome) or TimeoutError (no outcome within `timeout` seconds per step)."""
    from efficy_sync.pii import mask_email
    from efficy_sync.store.configs import ConfigStore

    http = requests.Session()
    efficy, apsis = ready["efficy_url"], ready["apsis_url"]
    integration_id = ready["demo"]["integration_id"]
    cfg = ConfigStore(ready["stack"]["ConfigTable"]).get(integration_id)
    email_topics = {m.subscription: m.crm_profile for m in cfg.consent_mappings if m.channel == "email"}

    key, topic, profile = _someone_opted_in(http, apsis, email_topics)
    crm_profile = email_topics[topic]
    address = mask_email(profile["attributes"].get("com.apsis1.attributes.email"))
    say(f"\n-- Opt-out write-back: person {key} ({address}) unsubscribes from {topic} in APSIS One --")
    calls_before = _calls(http, apsis)
    started = time.monotonic()
    body = {"profile_key": key, "topic": topic, "channel": "email"}
    http.post(f"{apsis}/_sim/unsubscribe", json=body, timeout=10).raise_for_status()
    say("  APSIS One: unsubscribe clicked; the automation's Webhook node calls our opt-out route")

    person = wait_for(
        f"person {key} out of CRM profile {crm_profile} in Efficy",
        lambda: _efficy_person_without(http, efficy, key, crm_profile),
        timeout,
    )
    say(f"  Efficy: person {key} removed from CRM profile {crm_profile} {time.monotonic() - started:.1f}s later")
    record = wait_for("the confirmed opt-out record", lambda: _confirmed(ready, integration_id, key, topic), timeout)
    say(
        f"  recorded {record.event} at {record.at} (source {record.source}); Efficy confirmed at {record.confirmed_stamp}"
    )
    wait_for("the write-back's sync", lambda: _state_stamp(ready, integration_id, key) == person["D_CHANGE"], timeout)
    after_write_back = _calls(http, apsis)
    by_write_back = _writes(after_write_back) - _writes(calls_before)
    resent = _consent_posts(after_write_back) - _consent_posts(calls_before)

    # Efficy announces the removal with its own webhook: that echo of our change must cost no APSIS call.
    before_echo = _calls(http, apsis)
    http.post(f"{efficy}/_sim/webhooks/flush", json={}, timeout=timeout)
    wait_for("the echo webhook to be processed", lambda: _queue_empty(ready["stack"]["ContactChangesQueue"]), timeout)
    time.sleep(0.5)
    echo = _writes(_calls(http, apsis)) - _writes(before_echo)
    consent = next(
        (
            c
            for c in (_profile(http, apsis, key) or {}).get("consents", [])
            if (c["topic"], c["channel"]) == (topic, "email")
        ),
        None,
    )
    assert consent is not None and consent["type"] == "opt-out", f"APSIS One lost the opt-out: {consent}"
    assert echo == 0, f"the echo of our own write-back made {echo} APSIS call(s)"
    why = "profile tags follow the CRM profile"
    if resent:
        why += "; the opt-out sent once more, as our opt-in had gone out only moments before the click"
    say(f"  APSIS One calls: {by_write_back} by the write-back ({why}), 0 by Efficy's echo webhook")
    say("  APSIS One still holds the person's opt-out; nothing opted them in again")


def _someone_opted_in(
    http: requests.Session, apsis: str, email_topics: dict[str, int]
) -> tuple[str, str, dict[str, Any]]:
    profiles = http.get(f"{apsis}/_sim/profiles", timeout=10).json()["profiles"]
    for profile in sorted(profiles, key=lambda p: p["key"]):
        if profile["keyspace"] != KEYSPACE:
            continue
        for consent in profile.get("consents", []):
            if consent["channel"] == "email" and consent["type"] == "opt-in" and consent["topic"] in email_topics:
                return profile["key"], consent["topic"], profile
    raise AssertionError("no APSIS One profile is opted in to a mapped e-mail subscription: nobody to unsubscribe")


def _calls(http: requests.Session, apsis: str) -> dict[str, int]:
    return http.get(f"{apsis}/_sim/calls", timeout=10).json()


def _profile(http: requests.Session, apsis: str, key: str) -> dict[str, Any] | None:
    response = http.get(f"{apsis}/_sim/profiles/{KEYSPACE}/{key}", timeout=10)
    return response.json() if response.status_code == 200 else None


def _efficy_person_without(http: requests.Session, efficy: str, key: str, crm_profile: int) -> dict[str, Any] | None:
    response = http.get(f"{efficy}/_sim/persons/{key}", timeout=10)
    if response.status_code != 200:
        return None
    person = response.json()
    return None if crm_profile in person.get("profiles", []) else person


def _state(ready: dict[str, Any], integration_id: str, key: str) -> Any:
    from efficy_sync.store.persons import PersonStateStore

    return PersonStateStore(ready["stack"]["StateTable"]).get(integration_id, key)


def _confirmed(ready: dict[str, Any], integration_id: str, key: str, topic: str) -> Any:
    state = _state(ready, integration_id, key)
    record = state.optouts.get(f"{topic}|email") if state is not None else None
    return record if record is not None and record.confirmed else None


def _state_stamp(ready: dict[str, Any], integration_id: str, key: str) -> str | None:
    state = _state(ready, integration_id, key)
    return state.change_stamp if state is not None else None


def _writes(calls: dict[str, int]) -> int:
    return sum(
        n
        for route, n in calls.items()
        if route.split(" ", 1)[0] in {"POST", "PATCH", "PUT", "DELETE"} and "/oauth/" not in route
    )


def _consent_posts(calls: dict[str, int]) -> int:
    return sum(n for route, n in calls.items() if route.startswith("POST") and route.endswith("/consents"))


def _queue_empty(queue_url: str) -> bool:
    from efficy_sync.aws import client

    attributes = client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return not int(attributes["ApproximateNumberOfMessages"]) and not int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
