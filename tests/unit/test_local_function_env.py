"""The local stack runs every handler in one process, whose environment holds every function's variables: each
handler's settings leave out the variables only other functions have, as on AWS (efficy_sync.settings
.function_scope, local/lambdas.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from efficy_sync.settings import settings
from efficy_sync_tools.local.lambdas import FunctionRouter, carry_scope_into_pools, hidden_variables
from efficy_sync_tools.local.template import FunctionSpec, SamTemplate

ROOT = Path(__file__).resolve().parents[2]

HANDLER = """
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from efficy_sync.settings import settings

AT_IMPORT = settings().pages_bucket  # module code runs inside the function, as on Lambda
MARK = contextvars.ContextVar("mark", default="none")


def handler(event, context):
    seen = {}
    thread = threading.Thread(target=lambda: seen.update(thread=settings().pages_bucket))
    thread.start()
    thread.join()
    MARK.set("set by the handler")
    with ThreadPoolExecutor(max_workers=2) as pool:
        seen["pool"] = pool.submit(lambda: settings().pages_bucket).result()
        seen["pool_mark"] = list(pool.map(lambda _: MARK.get(), [1]))[0]
    return {"at_import": AT_IMPORT, "in_handler": settings().pages_bucket, **seen}
"""


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FunctionRouter:
    for name, value in {
        "CONFIG_TABLE": "config",
        "STATE_TABLE": "state",
        "CONTACT_QUEUE_URL": "queue",
        "PAGES_BUCKET": "pages",
    }.items():
        monkeypatch.setenv(name, value)
    specs = {}
    for lid in ("PageFunction", "WebhookFunction"):
        (tmp_path / lid).mkdir()
        (tmp_path / lid / "app.py").write_text(HANDLER)
        specs[lid] = FunctionSpec(lid, tmp_path / lid, "app.handler")
    own = {"PageFunction": {"CONFIG_TABLE", "PAGES_BUCKET"}, "WebhookFunction": {"CONFIG_TABLE", "BUNDLE_QUEUE"}}
    settings.cache_clear()
    carry_scope_into_pools()  # as LocalStack.start does
    yield FunctionRouter(specs, {lid: f"efficy-sync-{lid}" for lid in specs}, "eu-west-1", hidden_variables(own))
    settings.cache_clear()


def test_a_handler_does_not_see_a_variable_only_another_function_has(router: FunctionRouter) -> None:
    assert router.invoke("PageFunction", {}) == {
        "at_import": "pages",
        "in_handler": "pages",
        "thread": "pages",
        "pool": "pages",
        "pool_mark": "none",
    }
    # WebhookFunction has no PAGES_BUCKET on AWS: neither its module code nor its handler sees the process's
    assert router.invoke("efficy-sync-WebhookFunction", {})["in_handler"] == ""
    assert router.invoke("WebhookFunction", {})["at_import"] == ""
    assert settings().pages_bucket == "pages"  # outside any function: the process's environment


def test_threads_a_handler_starts_read_the_process_settings(router: FunctionRouter) -> None:
    """A documented limit: a thread the handler starts itself does not inherit the function's scope."""
    assert router.invoke("WebhookFunction", {})["thread"] == "pages"


def test_a_handler_s_pool_threads_work_in_its_scope_and_in_nothing_else_of_its_context(router: FunctionRouter) -> None:
    """As on Lambda (one function per process): a pool thread reads its function's settings and is checked
    against its role (local/iam.py), but sees none of the handler's other context variables (a deadline, a
    correlation id): code that forgets to pass them on fails here too."""
    answer = router.invoke("WebhookFunction", {})
    assert answer["pool"] == "" and answer["pool_mark"] == "none"
    with ThreadPoolExecutor(max_workers=1) as pool:  # outside any function: the process's settings, as before
        assert pool.submit(lambda: settings().pages_bucket).result() == "pages"


def test_functions_invoked_at_once_keep_their_own_settings(router: FunctionRouter) -> None:
    results: dict[str, list[str]] = {"PageFunction": [], "WebhookFunction": []}

    def call(lid: str) -> None:
        for _ in range(20):
            results[lid].append(router.invoke(lid, {})["in_handler"])

    threads = [threading.Thread(target=call, args=(lid,)) for lid in results for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results["PageFunction"]) == {"pages"} and set(results["WebhookFunction"]) == {""}


def test_the_template_s_function_variables_are_hidden_from_the_others() -> None:
    specs = SamTemplate.load(ROOT / "template.yaml").functions()
    hidden = hidden_variables({lid: set(spec.environment) for lid, spec in specs.items()})
    assert "PAGES_BUCKET" in hidden["IngestWebhookFunction"] and "PAGES_BUCKET" in hidden["CleanupFunction"]
    assert "WEBHOOK_BUNDLE_QUEUE_URL" in hidden["SyncPageFunction"]
    assert "PAGES_BUCKET" not in hidden["SyncPageFunction"] and "PAGES_BUCKET" not in hidden["FullSyncStepFunction"]
    assert all("CONFIG_TABLE" not in names and "STATE_TABLE" not in names for names in hidden.values())  # Globals


def test_each_handler_counts_down_from_its_own_timeout_in_template_yaml(tmp_path: Path) -> None:
    """Every function had 900 s of remaining time locally, a page too (300 s on AWS): its deadline logic ran with
    three times the budget it has where it ships."""
    specs = SamTemplate.load(ROOT / "template.yaml").functions()
    assert specs["SyncPageFunction"].timeout == 300
    assert all(spec.timeout >= 3 for spec in specs.values())
    (tmp_path / "F").mkdir()
    (tmp_path / "F" / "app.py").write_text(
        "def handler(event, context):\n    return context.get_remaining_time_in_millis()\n"
    )
    router = FunctionRouter({"F": FunctionSpec("F", tmp_path / "F", "app.handler", timeout=29)}, {}, "eu-west-1")
    assert 28_000 < router.invoke("F", {}) <= 29_000
