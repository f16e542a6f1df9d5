"""The APSIS One simulator's product routes touch only the profile they name, never the whole store.

Benchmarks replay tens of thousands of profile, consent and tag writes onto one simulator, so a route that
scanned, copied or serialised every stored profile would make each call slower as the store grows (and a
ceiling measured on it would drift with the bench's size). Counted, not timed: the store is swapped for a dict
that counts every whole-store walk (iteration, keys/values/items, copy; json.dumps and copy.deepcopy go through
items() for a dict subclass), and Profile.view, the whole-profile rendering the control routes use, is counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from efficy_sync_tools.sims import apsis as apsis_sim
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_apsis_sim import CRM, EMAIL, EVENTS, FIRSTNAME_V, NEWSLETTER, SECTION, T

STORED = 30  # profiles in the store before the counted calls


class CountingStore(dict):
    """The simulator's profile store, counting every walk over all of it."""

    walks = 0

    def _walked(self) -> None:
        type(self).walks += 1

    def __iter__(self) -> Iterator[Any]:
        self._walked()
        return super().__iter__()

    def keys(self) -> Any:
        self._walked()
        return super().keys()

    def values(self) -> Any:
        self._walked()
        return super().values()

    def items(self) -> Any:
        self._walked()
        return super().items()

    def copy(self) -> dict[Any, Any]:
        self._walked()
        return super().copy()


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    with ApsisSimulator(rate_limits=False) as simulator:
        yield simulator


def _headers(sim: ApsisSimulator, content_type: str | None = None) -> dict[str, str]:
    body = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret}
    token = requests.post(f"{sim.url}/oauth/token", json=body, timeout=T).json()["access_token"]
    return {"Authorization": f"Bearer {token}", **({"Content-Type": content_type} if content_type else {})}


def test_profile_consent_and_tag_calls_never_walk_the_store(sim: ApsisSimulator, monkeypatch: Any) -> None:
    auth = _headers(sim)
    as_json = {**auth, "Content-Type": "application/json"}
    as_patch = {**auth, "Content-Type": "application/merge-patch+json"}
    profiles = f"{sim.url}/audience/keyspaces/{CRM}/sections/{SECTION}/profiles"

    def profile(key: str, v2: bool = False) -> str:
        return f"{sim.url}{'/v2' if v2 else ''}/audience/keyspaces/{CRM}/profiles/{key}"

    def send(method: str, url: str, headers: dict[str, str], body: Any = None) -> int:
        data = json.dumps(body).encode() if body is not None else None
        return requests.request(method, url, data=data, headers=headers, timeout=T).status_code

    for number in range(STORED):
        assert send("POST", profiles, as_json, {"profile_key": f"p{number}"}) == 201
    views = {"calls": 0}
    real_view = apsis_sim.Profile.view

    def counted_view(self: apsis_sim.Profile) -> dict[str, Any]:
        views["calls"] += 1
        return real_view(self)

    monkeypatch.setattr(apsis_sim.Profile, "view", counted_view)
    monkeypatch.setattr(CountingStore, "walks", 0)
    with sim._lock:
        sim._profiles = CountingStore(sim._profiles)

    consent = {"topic_discriminator": NEWSLETTER, "channel_discriminator": EMAIL, "type": "opt-in"}
    for number in range(STORED):
        key = f"p{number}"
        assert send("PATCH", f"{profile(key)}/sections/{SECTION}/attributes", as_patch, {FIRSTNAME_V: "Ann"}) == 204
        attributes = {"com.apsis1.attributes.lastname": "Lee"}
        assert send("PATCH", f"{profile(key, v2=True)}/sections/{SECTION}/attributes", as_patch, attributes) == 204
        assert send("POST", f"{profile(key, v2=True)}/sections/{SECTION}/consents", as_json, consent) == 201
        assert send("POST", f"{profile(key, v2=True)}/sections/{SECTION}/consents", as_json, consent) == 409
        opt_out = {**consent, "topic_discriminator": EVENTS, "type": "opt-out"}
        assert send("POST", f"{profile(key, v2=True)}/sections/{SECTION}/consents", as_json, opt_out) == 201
        assert send("PATCH", f"{profile(key)}/sections/{SECTION}/tags", as_patch, {"vip": True}) == 204
        assert send("GET", f"{profile(key, v2=True)}/sections/{SECTION}/consents", auth) == 200
    # the create paths: v1 PATCH on a new key, POST of a new key and of a held one; a delete; a missing profile
    assert send("PATCH", f"{profile('new-v1')}/sections/{SECTION}/attributes", as_patch, {FIRSTNAME_V: "Bo"}) == 204
    assert send("POST", profiles, as_json, {"profile_key": "new-post"}) == 201
    assert send("POST", profiles, as_json, {"profile_key": "p0"}) == 409
    assert send("DELETE", profile("p1"), auth) == 204
    assert send("PATCH", f"{profile('absent')}/sections/{SECTION}/tags", as_patch, {"vip": True}) == 404

    assert (CountingStore.walks, views["calls"]) == (0, 0)
    assert len(sim._profiles) == STORED + 1  # two created, one deleted: the counted store is the one written
    # the spies see a walk when there is one: the control route lists every profile
    requests.get(f"{sim.url}/_sim/profiles", timeout=T).raise_for_status()
    assert CountingStore.walks > 0 and views["calls"] == STORED + 1
