"""Issue 15's blast-radius breaker on the local stack, driven as an admin would: the CLI, the simulators.

The tests run on the loud stack (tests/conftest.py: the handlers' EMF metrics printed, which the shared stack
keeps off), so they can see the alarm's metric; a metric counts only when logged during the test. Each test has its own integration and simulators (test_full_sync.make_crm), so
the APSIS call counts asserted here are this test's alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_full_sync import NEWS, Crm, make_crm
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300), pytest.mark.xdist_group("loud_stack")]

EXIT_HALTED = 5
CONSENT_ROUTE = "consents"  # part of the APSIS consent routes' templates


@pytest.fixture
def crms(loud_stack: Stack, tmp_path: Path) -> Iterator[list[Crm]]:
    made: list[Crm] = []
    yield made
    for crm in made:
        crm.efficy.stop()
        crm.apsis.stop()


def new_crm(stack: Stack, tmp_path: Path, made: list[Crm], **safety: Any) -> Crm:
    """An integration with the breaker's defaults (5 %, at least 10) unless `safety` says otherwise (demo.yaml,
    which make_crm copies, raises the floor for the shared demo integration)."""
    crm = make_crm(stack, tmp_path, page_size=100)
    made.append(crm)
    reapply(crm, tmp_path, lambda cfg: cfg.update(safety={"max_removal_percent": 5, "min_removals": 10, **safety}))
    return crm


def reapply(crm: Crm, tmp_path: Path, change: Any) -> None:
    """An admin editing the integration's YAML and applying it again."""
    path = tmp_path / f"{crm.integration_id}.yaml"
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    crm.stack.cli("config", "apply", str(path), "--by", "tests", check=True)


def members(n: int, also: int) -> list[dict[str, Any]]:
    """n synced persons in the newsletter profile (12); the first `also` of them in the SMS profile (13) too."""
    return [
        {
            "K_CONTACT": i,
            "NAME": f"Name{i}",
            "FIRSTNAME": f"First{i}",
            "EMAIL1": f"p{i}@example.com",
            "MOBILE": f"+32470{i:06d}",
            "LANGUAGE": "EN",
            "OPENED": "1",
            "ROBINSON": "0",
            "profiles": [12, 13] if i <= also else [12],
        }
        for i in range(1, n + 1)
    ]


def news_consents(crm: Crm) -> dict[str, str]:
    """profile key -> the newsletter consent APSIS holds."""
    held = {}
    for key, profile in crm.profiles().items():
        for consent in profile["consents"]:
            if (consent["topic"], consent["channel"]) == NEWS:
                held[key] = consent["type"]
    return held


def consent_calls(crm: Crm) -> int:
    return sum(n for route, n in crm.apsis_calls().items() if CONSENT_ROUTE in route and not route.startswith("GET"))


def held_keys(crm: Crm) -> int:
    return crm.stack.client("dynamodb").query(
        TableName=crm.stack.names["StateTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"HELD#{crm.integration_id}"}},
        Select="COUNT",
        ConsistentRead=True,
    )["Count"]


def metric_emitted(stack: Stack, name: str, since: int) -> bool:
    """Whether the handlers printed the EMF metric `name` after `since` bytes of the stack's log (the loud stack
    is shared: an earlier test's metric does not count)."""
    with stack.log_path.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    for raw in text.splitlines():
        if raw.startswith("{") and f'"{name}"' in raw:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if "_aws" in line and line.get(name):
                return True
    return False


def test_a_mapping_change_that_would_opt_out_40_percent_halts_before_any_opt_out_then_the_confirmed_count_sends_them(
    loud_stack: Stack, crms: list[Crm], tmp_path: Path
) -> None:
    since = loud_stack.log_path.stat().st_size
    crm = new_crm(loud_stack, tmp_path, crms)
    crm.seed(members(50, also=30), vip={1, 2})
    first = crm.cli("start", crm.integration_id, "--follow")
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(news_consents(crm).values()) == {"opt-in"} and len(news_consents(crm)) == 50

    # The mistake: the newsletter now follows the SMS club's profile, which 20 of the 50 (40 %) are not in.
    def newsletter_from_sms_profile(cfg: dict[str, Any]) -> None:
        for mapping in cfg["consent_mappings"]:
            if mapping["subscription"] == NEWS[0]:
                mapping["crm_profile"] = 13

    reapply(crm, tmp_path, newsletter_from_sms_profile)
    calls_before = consent_calls(crm)

    dry = crm.cli("start", crm.integration_id, "--dry-run", "--follow")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    lines = dry.stdout.splitlines()
    removals_at = next(i for i, line in enumerate(lines) if line.strip().startswith("removals that would be made"))
    pages_at = next(i for i, line in enumerate(lines) if line.strip().startswith("pages:"))
    assert removals_at < pages_at  # the removals come first
    assert "the real run WOULD HALT" in dry.stdout

    halted = crm.cli("start", crm.integration_id, "--follow")

    assert halted.returncode == EXIT_HALTED, halted.stdout + halted.stderr
    assert "HALTED" in halted.stdout and "--allow-removals" in halted.stdout
    row = next(line for line in halted.stdout.splitlines() if f"opt-outs {NEWS[0]} [email]" in line)
    assert row.split()[-4:] == ["20", "50", "9", "OVER"]  # 20 removals of 50 holders, limit max(10-1, 5 % of 50)
    assert consent_calls(crm) == calls_before  # not one opt-out reached APSIS One
    assert set(news_consents(crm).values()) == {"opt-in"}
    run = crm.run()
    assert run.status == "halted"
    assert run.report["breaker"]["removals"][f"rm:optout:{NEWS[0]}|{NEWS[1]}"]["removals"] == 20
    assert crm.lock_status() == "released"  # real time goes on
    listing = crm.cli("list", crm.integration_id)
    assert "HALTED" in listing.stdout
    wait_for("the FullSyncHalted metric", lambda: metric_emitted(loud_stack, "FullSyncHalted", since))

    assert "--allow-removals-up-to 20" in halted.stdout  # the count to confirm, from the report
    too_few = crm.cli("start", crm.integration_id, "--allow-removals-up-to", "19", "--follow")
    assert too_few.returncode == EXIT_HALTED, too_few.stdout + too_few.stderr
    assert "more than the 19 confirmed" in too_few.stdout and consent_calls(crm) == calls_before

    allowed = crm.cli("start", crm.integration_id, "--allow-removals-up-to", "20", "--follow")

    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "up to 20 removals of each kind held before confirmed" in allowed.stdout
    consents = news_consents(crm)
    assert sorted(k for k, kind in consents.items() if kind == "opt-out") == [str(k) for k in range(31, 51)]
    assert sorted(k for k, kind in consents.items() if kind == "opt-in") == sorted(str(k) for k in range(1, 31))
    assert crm.run().status == "succeeded"
    assert held_keys(crm) == 0


def test_a_real_time_burst_of_removals_is_held_and_alarmed_while_an_apsis_unsubscribe_is_still_written_back(
    loud_stack: Stack, crms: list[Crm], tmp_path: Path
) -> None:
    since = loud_stack.log_path.stat().st_size
    crm = new_crm(loud_stack, tmp_path, crms, max_removal_percent=5, min_removals=3, window_minutes=60)
    crm.seed(members(20, also=0), vip=set())
    first = crm.cli("start", crm.integration_id, "--follow")
    assert first.returncode == 0, first.stdout + first.stderr  # also records the base: 20 profiles
    token = crm.stack.client("secretsmanager").get_secret_value(
        SecretId=f"efficy-sync/{crm.integration_id}/apsis-optout"
    )["SecretString"]
    crm.apsis.configure_webhook(
        f"{crm.stack.api_url}/integrations/{crm.integration_id}/apsis/optout",
        headers={"X-Apsis-Webhook-Token": token},
    )

    for key in range(1, 7):  # six persons leave the newsletter profile in the CRM: a burst
        crm.edit(key, profiles=[])

    # The limit is max(3 - 1, 5 % of 20) = 2 removals per window: two go out, the breaker trips, four wait.
    wait_for("four persons' removals held", lambda: held_keys(crm) == 4, timeout=60)
    # the stack's pollers apply the six changes in parallel: a removal the gate let through may still be on its way
    # to APSIS One (or its state not stored) while the later ones are already held; wait until every change is done
    wait_for("every change handled", lambda: crm.stack.queue_depth("ContactChangesQueue") == 0, timeout=60)
    opted_out = {k for k, kind in news_consents(crm).items() if kind == "opt-out"}
    assert len(opted_out) == 2 and opted_out <= {str(k) for k in range(1, 7)}
    wait_for("the alarm's metric", lambda: metric_emitted(loud_stack, "RemovalBreakerTripped", since))
    status = crm.cli("status", crm.integration_id)
    assert "removals held by the blast-radius breaker: 4 person(s)" in status.stdout
    assert f"full-sync start {crm.integration_id} --allow-removals" in status.stdout

    # Meanwhile a person unsubscribes in APSIS One: that opt-out is never held back.
    crm.apsis.unsubscribe("15", NEWS[0], "email")
    wait_for(
        "the unsubscribe written back to Efficy",
        lambda: 12 not in (crm.efficy.get_person(15) or {}).get("profiles", [12]),
        timeout=60,
    )

    released = crm.cli("start", crm.integration_id, "--allow-removals", "--follow")

    assert released.returncode == 0, released.stdout + released.stderr
    opted_out = {k for k, kind in news_consents(crm).items() if kind == "opt-out"}
    assert opted_out == {*(str(k) for k in range(1, 7)), "15"}
    assert held_keys(crm) == 0
    assert "removals held" not in crm.cli("status", crm.integration_id).stdout
