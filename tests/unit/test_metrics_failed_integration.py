"""A real-time batch held two integrations' changes: integration A's person met APSIS 429s until its retries ran
out (the message failed and was retried), integration B's person synced. A failed message never marked its
integration as served, so the per-integration metrics (dimension integration_id) published A's APSIS calls and
429s as B's: an operator reading B's Apsis429 chased a rate-limit problem in the wrong integration while A's
went unseen."""

from __future__ import annotations

import json
from typing import Any

import pytest
from efficy_sync.changes import ContactChange
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.clients.meter import meter
from efficy_sync.observability import metrics
from efficy_sync.sync import Outcome
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.unit.test_deadline_wiring import Context, load  # noqa: F401 (fixture)

SECTION = "com.apsis1.sections.default"


def _record(n: int, change: ContactChange) -> dict[str, Any]:
    return {
        "messageId": f"m-{n}",
        "receiptHandle": f"r-{n}",
        "body": change.model_dump_json(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "MessageGroupId": f"{change.integration_id}#{change.person_key}",
        },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }


def test_one_integrations_failed_apsis_calls_are_not_published_as_the_other_integrations(
    load: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = load("apply_changes")
    with ApsisSimulator(client_id="cid", client_secret="not-a-real-secret") as sim:
        # integration A's person 4711: APSIS answers 429 until the in-call retries run out
        sim.add_fault(path_regex="/profiles/4711/", status=429, count=50, headers={"Retry-After": "0"})
        apsis = ApsisClient(
            sim.url, "cid", "not-a-real-secret", section=SECTION, policy=RetryPolicy(total=3, backoff_factor=0)
        )

        class Batch:
            def apply(self, change: ContactChange) -> Outcome:
                if change.integration_id == "acme-a":  # 429s until the retries run out: raises, retried by SQS
                    apsis.patch_attributes(str(change.person_key), {"com.apsis1.attributes.firstname": "Jane"})
                else:  # B's person: one call that APSIS answers
                    apsis.list_sections()
                return Outcome(change.person_key, "synced")

        monkeypatch.setattr(app.worker, "prefetch", lambda changes: Batch())
        monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
        meter.take()
        metrics.clear_metrics()
        capsys.readouterr()
        event = {
            "Records": [
                _record(1, ContactChange(integration_id="acme-a", person_key=4711, operation="Update")),
                _record(2, ContactChange(integration_id="globex-b", person_key=4712, operation="Update")),
            ]
        }
        answer = app.handler(event, Context(remaining_ms=60_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}  # A's failed, B's synced
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    (total,) = [b for b in blobs if "integration_id" not in b]
    assert total["Apsis429"] == [4.0]  # every one of them was acme-a's person's
    per_integration = {b["integration_id"]: b for b in blobs if "integration_id" in b}
    b_doc = per_integration.get("globex-b", {})
    assert "Apsis429" not in b_doc, (
        f"integration globex-b is published with Apsis429={b_doc.get('Apsis429')} and ApsisCalls="
        f"{b_doc.get('ApsisCalls')}: the 429s and calls of acme-a's failed person"
    )
