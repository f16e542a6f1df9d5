"""A large webhook on the local stack, as shipped: over the default threshold (100 persons) its changes travel in
bundles, the splitter Lambda puts them on the FIFO queue after the 202, and every person is synced under its own
correlation id. A bundled change that is older than what a later webhook already applied changes nothing: the
worker refetches the person and never stores an older snapshot over a newer one.
"""

from __future__ import annotations

from typing import Any

from tests.support import Stack, person, unique_key, wait_for

THRESHOLD = 100  # EFFICY_SYNC_WEBHOOK_BUNDLE_OVER's default: the test relies on the shipped setting


def _stored(stack: Stack, key: int) -> dict[str, Any]:
    return stack.stored_state(key)


def _first_name(stack: Stack, key: int) -> str | None:
    return (stack.profile(key) or {}).get("attributes", {}).get("com.apsis1.attributes.firstname")


def test_a_webhook_over_the_threshold_is_split_after_the_202_and_never_undoes_a_newer_change(stack: Stack) -> None:
    keys = [unique_key() for _ in range(THRESHOLD + 1)]
    late = keys[0]
    stack.seed([person(k, FIRSTNAME=f"Bulk{k}") for k in keys])
    # A newer change of `late` is applied first, through the direct path (one person).
    stack.seed([person(late, FIRSTNAME="Newer")])
    small = [{"table": 11000, "key": late, "operation": "Update", "fields": {}, "date": "2026-03-01T12:00:00Z"}]
    assert stack.signed_webhook(small).status_code == 202
    wait_for("the newer change applied", lambda: _first_name(stack, late) == "Newer")

    # Then the large webhook, whose record of `late` is older: bundled, split, applied.
    records = [
        {"table": 11000, "key": k, "operation": "Update", "fields": {}, "date": "2026-03-01T10:00:00Z"} for k in keys
    ]
    answer = stack.signed_webhook(records)
    assert answer.status_code == 202 and answer.json()["accepted"] == len(keys)
    wait_for(
        "every bundled person synced",
        lambda: all(_first_name(stack, k) == f"Bulk{k}" for k in keys[1:]),
        timeout=120,
        interval=1.0,
    )
    # the first name is the change's first APSIS call; the state (with its correlation id) is stored after the
    # last one: wait for every bundled person's stored outcome rather than read a state not written yet
    wait_for(
        "every bundled person's stored outcome",
        lambda: all(_stored(stack, k).get("last_outcome") == "synced" for k in keys[1:]),
        timeout=60,
        interval=1.0,
    )
    ids = [_stored(stack, k).get("correlation_id", "") for k in keys[1:]]
    requests = {cid.rsplit("/", 1)[0] for cid in ids}
    assert len(requests) == 1 and "" not in requests  # one webhook call named by every change it brought
    assert sorted(int(cid.rsplit("/", 1)[1]) for cid in ids) == list(range(2, len(keys) + 1))

    # Other tests share the stack's queues: wait for this webhook's own messages (bundles, then changes) to be gone.
    wait_for(
        "the bundles and changes handled",
        lambda: stack.queue_depth("WebhookBundleQueue") == 0 and stack.queue_depth("ContactChangesQueue") == 0,
        timeout=60,
    )
    assert _first_name(stack, late) == "Newer"  # the older bundled record did not bring back an older value
    assert stack.queue_depth("WebhookBundleDLQ") == 0
