"""Diff mode's matched ceiling: the APSIS writes a first load made, replayed as bare calls in the same run.

The 2-call ceiling (bench.full_sync._ceiling) creates each profile and patches one attribute for every person of
the CRM. The product cannot do the same work in those calls: APSIS One has no batch consent endpoint (one
consent per call, contracts/apsis-one.md section 3), tags are their own call, and a person failing the sync
conditions costs no call at all. So against that ceiling the product's share is capped by the calls alone
(about 2 / 2.35 on the bench's CRM) before any of its own work is counted.

This ceiling sends exactly the writes the product's first load left in APSIS One (read back from the
simulator): for each profile one v1 attribute PATCH (create and attributes in one call, as the product sends
it), one consent call per consent, one tag call when it has tags, with the Efficy pages read as the product reads
them, five pages at a time and 16 persons of a page at once; no state, no plan, no condition. What it measures
is the product's overhead over the calls the data needs: its reads and writes of person state, its planning, its
pacing and the Step Functions run around the pages.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests


def written(stack: Any) -> dict[str, dict[str, Any]]:
    """What APSIS One holds now, by profile key: the writes to replay."""
    answer = requests.get(f"{stack.apsis.url}/_sim/profiles", timeout=120)
    answer.raise_for_status()
    return {str(p["key"]): p for p in answer.json()["profiles"]}


def replay(stack: Any, n: int, profiles: dict[str, dict[str, Any]], page_size: int = 500) -> dict[str, Any]:
    """Time the replay of `profiles` onto an emptied APSIS simulator (which ends holding them again)."""
    from efficy_sync.fullsync.page import PERSON_THREADS

    from bench.full_sync import _clients, timed_pages

    efficy, apsis = _clients(stack)
    pages = -(-n // page_size)
    fields = ["K_CONTACT", "EMAIL1", "FIRSTNAME", "NAME", "MOBILE", "LANGUAGE", "OPENED", "ROBINSON"]

    def person(record: dict[str, Any]) -> None:
        held = profiles.get(str(record["K_CONTACT"]))
        if held is None:  # the product skipped this person: no call
            return
        key = str(record["K_CONTACT"])
        apsis.create_with_attributes(key, held["attributes"])
        for consent in held["consents"]:
            apsis.set_consent(key, consent["topic"], consent["channel"], consent["type"])
        if held["tags"]:
            apsis.patch_tags(key, dict.fromkeys(held["tags"], True))

    def page(number: int) -> None:
        records = efficy.list_persons_page(number, page_size, fields, include_profiles=True)
        with ThreadPoolExecutor(PERSON_THREADS) as pool:
            list(pool.map(person, records))

    requests.post(f"{stack.apsis.url}/_sim/reset", timeout=60)
    apsis.live_attribute_versions()  # the product lists them once per client too, before its first PATCH
    elapsed, calls = timed_pages(stack, pages, page)
    return {
        "seconds": round(elapsed, 1),
        "persons_per_second": round(n / elapsed, 1),
        "apsis_calls_per_1000": round(calls * 1000 / n, 1),
    }
