"""A connector that caps its page size below efficy.page_size, on a CRM that fits in one requested page: the first
(and only) Efficy page answered `cap` persons, and the probe for more looked at the next requested page's first
index, past the end, so the short page was taken for the end of the data: the persons past the cap were never
synced and the run reported SUCCEEDED (the plan itself counted them all). The probe now looks right after the
last record answered, and the page fails with PAGE_SIZE_CAPPED, as the README says."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.fullsync_harness import World, apsis_sim, make_world, person, raw_config  # noqa: F401  (fixtures)


def test_a_capped_connector_on_a_small_crm_fails_the_run_instead_of_skipping_persons(
    make_world: Callable[..., World],
) -> None:
    # efficy.page_size 20 asked; the connector answers at most 10 a page; the CRM has 15 persons
    raw = raw_config()
    w = make_world(efficy={**raw["efficy"], "page_size": 20}, full_sync={"page_size": 20, "max_concurrency": 2})
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 16)])
    w.efficy_sim.page_size_cap = 10
    out = w.run()
    synced = w.in_apsis()
    status = (out["report"] or {}).get("status")
    # either every person reached APSIS One, or the run did not report success (PAGE_SIZE_CAPPED)
    assert "PAGE_SIZE_CAPPED" in str(out["page_errors"]) or "set efficy.page_size to 10" in str(out["page_errors"])
    assert synced == set(range(1, 16)) or status != "succeeded", (
        f"run {status} with persons {sorted(set(range(1, 16)) - synced)} never synced; page errors {out['page_errors']}"
    )
