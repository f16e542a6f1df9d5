"""Probe: an Efficy value holding a lone UTF-16 surrogate (a name cut in the middle of an emoji by a .NET
server, sent as the JSON escape "\\ud83d", which JSON parsers read) must cost at most that one person, never
the other persons of the page, of the webhook call, or a traceback in the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import wait_for
from tests.user_stack import UserStack, seed

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240), pytest.mark.xdist_group("user_stack")]

CUT_EMOJI = "Smith\ud83d"  # the JSON body the simulator sends carries "Smith\\ud83d"


def _synced_keys(first: int, last: int) -> list[int]:
    return [k for k in range(first, last + 1) if k % 7 and k % 5]  # local seed: OPENED=1, ROBINSON=0


def test_full_sync_survives_one_person_with_a_lone_surrogate(user: UserStack, tmp_path: Path) -> None:
    first, last = seed(user, 10, "--no-webhooks")
    odd, *others = _synced_keys(first, last)
    efficy = user.ready["efficy_url"]
    person = user.http.get(f"{efficy}/_sim/persons/{odd}", timeout=10).json()
    person["NAME"] = CUT_EMOJI
    user.http.post(f"{efficy}/_sim/persons", json={"persons": [person], "notify": False}, timeout=10).raise_for_status()
    integration_id = user.own_integration(tmp_path)

    run = user.cli("full-sync", "start", integration_id, "--follow", expect=None, timeout=180)
    assert run.returncode == 0 and "SUCCEEDED" in run.stdout, run.stdout[-1500:]
    for key in others:
        assert user.profile(key) is not None, f"person {key} not synced because person {odd} has a cut emoji"


def test_explain_reports_a_person_with_a_lone_surrogate_without_a_traceback(user: UserStack) -> None:
    first, last = seed(user, 6, "--no-webhooks")
    odd = _synced_keys(first, last)[0]
    efficy = user.ready["efficy_url"]
    person = user.http.get(f"{efficy}/_sim/persons/{odd}", timeout=10).json()
    person["NAME"] = CUT_EMOJI
    user.http.post(f"{efficy}/_sim/persons", json={"persons": [person], "notify": False}, timeout=10).raise_for_status()
    for extra in ((), ("--output", "json")):
        result = user.cli("explain", "demo", str(odd), *extra, expect=None)
        assert "Traceback" not in result.stderr, result.stderr[-800:]
        assert result.returncode == 0, result.stderr[-800:]


def test_a_webhook_with_one_lone_surrogate_value_still_syncs_the_other_person(user: UserStack) -> None:
    first, last = seed(user, 10)  # webhooks on, pointed at the demo integration
    odd, other, *_ = _synced_keys(first, last)
    wait_for(f"person {other} in APSIS One", lambda: user.profile(other), timeout=60)
    efficy = user.ready["efficy_url"]
    persons = {k: user.http.get(f"{efficy}/_sim/persons/{k}", timeout=10).json() for k in (odd, other)}
    persons[odd]["NAME"] = CUT_EMOJI
    persons[other]["FIRSTNAME"] = "Renamed"
    user.http.post(
        f"{efficy}/_sim/persons", json={"persons": list(persons.values()), "notify": True}, timeout=10
    ).raise_for_status()

    def renamed() -> bool:
        attrs = (user.profile(other) or {}).get("attributes", {})
        return attrs.get("com.apsis1.attributes.firstname") == "Renamed"

    wait_for(f"person {other}'s new first name in APSIS One", renamed, timeout=60)


def test_config_validate_shows_a_lone_surrogate_escaped_instead_of_a_traceback(user: UserStack, tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text('{"integration_id": "\\ud800", "efficy": {}, "apsis": {}}')  # the JSON escape, as a file holds it
    for extra in ((), ("--output", "json")):
        result = user.cli("config", "validate", str(path), *extra, expect=None)
        assert "Traceback" not in result.stderr, result.stderr[-800:]
        assert result.returncode == 1, (result.returncode, result.stdout[-500:], result.stderr[-500:])
