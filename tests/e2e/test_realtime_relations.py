"""A CRM whose webhook announces a change of a person's CRM profiles on a relation table, not on the contact's
record (the Efficy simulator's `profile_table`; contracts/efficy.md §5, §7: not documented either way), on the
local stack: with `efficy.relation_tables` naming that table, a person taken out of the newsletter profile in
Efficy is opted out in APSIS One by the webhook, through the real API route, queue and worker; before, the
record was ignored and the opt-out waited for the next full sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, Stack, person, unique_key, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

NEWS = "usercreated.topics.newsletter-ab12"  # CRM profile 12, email
PROF_TABLE = 11123


def news(stack: Stack, key: int) -> str | None:
    profile = stack.profile(key) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


def test_leaving_a_profile_announced_on_its_relation_table_opts_the_person_out(stack: Stack, tmp_path: Path) -> None:
    efficy = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())["efficy"]
    efficy.update(base_url=f"{stack.efficy_url}/crm", relation_tables=[{"table": PROF_TABLE, "key_part": "first"}])
    integration_id = stack.create_integration(tmp_path, efficy=efficy)
    url = f"{stack.api_url}/integrations/{integration_id}/efficy/webhook"
    secret = stack.demo["webhook_secret"]
    hook = {"url": url, "secret": secret, "mode": "hmac", "batch_ms": 100, "profile_table": PROF_TABLE}
    stack.http.post(f"{stack.efficy_url}/_sim/webhooks", json=hook, timeout=10).raise_for_status()
    key = unique_key()
    try:
        stack.seed([person(key, profiles=[])], notify=True)  # created: the contact's own record
        wait_for("the person in APSIS One", lambda: stack.profile(key), timeout=30)
        stack.edit(key, profiles=[12])  # joins the newsletter: only a relation record (Create) is sent
        wait_for("the opt-in", lambda: news(stack, key) == "opt-in", timeout=30)
        stack.edit(key, profiles=[])  # leaves it: a relation Delete with no fields, the contact in its key
        wait_for("the opt-out", lambda: news(stack, key) == "opt-out", timeout=30)
    finally:
        demo = {"url": f"{stack.api_url}/integrations/demo/efficy/webhook", "secret": secret, "batch_ms": 200}
        stack.http.post(f"{stack.efficy_url}/_sim/webhooks", json=demo, timeout=10).raise_for_status()
    assert stack.profile(key) is not None  # a relation Delete is no deletion of the person
