"""An import-mode page judges the sync conditions as the per-person path does: a record without a field a
condition reads is a malformed answer, not a person who passes (sync.PersonSyncer._check_readable refuses it as
INCOMPLETE_ANSWER). The import's split read the missing field as empty, so an `is_empty` condition (a block
list) passed and the file created the person in APSIS One, where the per-person path created nobody."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.page import sync_page

from tests.integration.test_import_layout import CFG, CRM, person, world  # noqa: F401  (world: fixture)
from tests.memory_store import MemoryPersonStateStore

BLOCKED = config_from_dict(
    {**CFG.model_dump(mode="json", by_alias=True), "sync_conditions": [{"field": "BLOCKED", "is_empty": True}]}
)


@pytest.mark.parametrize("write_mode", ["import", "diff"])
def test_a_page_creates_nobody_whose_record_lacks_a_condition_field(world: dict[str, Any], write_mode: str) -> None:
    """The export answers the page's 60 persons without BLOCKED (a connector that leaves out a field it has no
    value for): diff mode refuses the page (INCOMPLETE_ANSWER, retried and reported); import mode did not."""
    sim = world["efficy_sim"]
    sim.upsert_persons([{**person(k, [12]), "BLOCKED": "yes" if k == 1 else ""} for k in range(1, 61)])
    records = [
        {"K_CONTACT": k, "D_CHANGE": "2025-01-01T10:00:00", "EMAIL1": f"l{k}@example.com", "FIRSTNAME": f"F{k}",
         "MOBILE": f"+3247000{k:04d}", "profiles": [12]}
        for k in range(1, 61)
    ]  # fmt: skip
    body = json.dumps({"records": records, "page": 0, "page_size": 100})
    spec = {"path_regex": "^/v1/records/contacts", "status": 200, "count": 1, "body": body}
    assert requests.post(f"{sim.url}/_sim/faults", json={**spec, "content_type": "application/json"}, timeout=5).ok
    states = MemoryPersonStateStore()

    with pytest.raises(EfficyBusinessError, match="condition field"):
        sync_page(
            BLOCKED, {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True},
            efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False, write_mode=write_mode,
            max_concurrency=5,
        )  # fmt: skip

    created = [k for k in range(1, 61) if world["apsis_sim"].get_profile(CRM, str(k)) is not None]
    assert created == [], f"created in APSIS One on a record without BLOCKED: {created[:5]}"
