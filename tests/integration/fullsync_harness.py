"""The real FullSync steps (moto in-process) against the Efficy and APSIS One simulators over HTTP, driven step
by step as the state machine runs them (Begin, Plan, pages with SyncPage's retries, Seams, Tags, RemovalGate,
Release or Halt, Finish), with a hook before each Efficy records page (to fail one, or change Efficy mid-run).
moto's own interpreter cannot fail one page for good nor change Efficy between two pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.breaker import Breaker
from efficy_sync.fullsync.lifecycle import FullSync, TooManyPagesFailed
from efficy_sync.fullsync.parking import ParkingLot
from efficy_sync.fullsync.runs import RunStore
from efficy_sync.fullsync.tags import QueryMembers
from efficy_sync.fullsync.wiring import S3Plans
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.store.removals import HeldRemovals, RemovalBreaker
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.support import create_pk_sk_table

FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
SLOT = f"{NEWS}|email"
CRM = "com.apsis1.keyspaces.crm-id"
ARN = "arn:aws:states:eu-west-1:123456789012:execution:full-sync:"


def raw_config(**over: Any) -> dict[str, Any]:
    raw = {
        "integration_id": "p17",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/e",
            "webhook_secret_secret": "x/w",
            "page_size": 5,
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "sync_conditions": [{"field": "OPENED", "equals": "1"}],
        "field_mappings": [{"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"}],
        "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
        "tags": {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}]},
        "on_condition_lost": "delete",
        "on_delete": "delete",
        "full_sync": {"page_size": 10, "max_concurrency": 2},
        "safety": {"max_removal_percent": 5, "min_removals": 2},
    }
    raw.update(over)
    return raw


def person(key: int, opened: str = "1", profiles: list[int] | None = None) -> dict[str, Any]:
    return {
        "K_CONTACT": key,
        "NAME": f"N{key}",
        "FIRSTNAME": f"F{key}",
        "EMAIL1": f"p{key}@example.com",
        "OPENED": opened,
        "profiles": [12] if profiles is None else profiles,
    }


class Wrapped:
    """The Efficy client with a hook before each records-export page (to fail one, or change Efficy mid-run)."""

    def __init__(self, inner: EfficyClient, hook: Callable[[int, int], None]) -> None:
        self._inner, self._hook = inner, hook

    def list_persons_page(self, page: int, size: int, *args: Any, **kwargs: Any) -> Any:
        self._hook(page, size)
        return self._inner.list_persons_page(page, size, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class World:
    def __init__(self, region: str, efficy_sim: Any, apsis_sim: Any, raw: dict[str, Any]) -> None:
        create_pk_sk_table("config")
        create_pk_sk_table("state")
        boto3.client("s3").create_bucket(Bucket="plans", CreateBucketConfiguration={"LocationConstraint": region})
        queue = boto3.client("sqs").create_queue(QueueName="c.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        self.cfg = config_from_dict(raw)
        ConfigStore("config").put(self.cfg, applied_by="test")
        self.efficy_sim, self.apsis_sim = efficy_sim, apsis_sim
        self.hook: Callable[[int, int], None] = lambda page, size: None
        self.efficy = EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST)
        self.apsis = ApsisClient(apsis_sim.url, "p17", "p17-secret", section=self.cfg.apsis.section, policy=FAST)
        runs = RunStore("state")
        self.fs = FullSync(
            configs=ConfigStore("config"),
            runs=runs,
            parking=ParkingLot("state", runs),
            states=PersonStateStore("state"),
            members=QueryMembers("state"),
            queue_url=queue,
            plans=S3Plans("plans"),
            execution_status=lambda arn: "RUNNING",
            efficy_for=lambda cfg: Wrapped(self.efficy, lambda p, s: self.hook(p, s)),
            apsis_for=lambda cfg: self.apsis,
            held=HeldRemovals("state"),
            removal_breaker=RemovalBreaker("state"),
        )
        self._n = 0

    def in_apsis(self) -> set[int]:
        return {int(p["key"]) for p in self.apsis_sim.profiles()}

    def begin(self, **sync_input: Any) -> dict[str, Any]:
        """Begin alone (the run's execution is `self.arn()`): a test ends it as it likes, e.g. before its gate."""
        self._n += 1
        # runs begin back to back, often in the same second: their ids must still sort in order (new_run_id)
        return self.fs.begin({"integration_id": self.cfg.integration_id, **sync_input}, self.arn())

    def arn(self) -> str:
        """The execution ARN of the run begun last."""
        return f"{ARN}r{self._n}"

    def run(
        self,
        *,
        allow_removals: bool = False,
        allow_removals_up_to: int = 0,
        page_attempts: int = 7,
        between_pages: Callable[[int], None] | None = None,
        before_release: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """One full sync, step by step as the state machine runs it (a page is retried up to `page_attempts`
        times on any error, as SyncPage's Retry; a page that keeps failing is tolerated by the Map)."""
        sync_input: dict[str, Any] = {}
        if allow_removals:
            sync_input["allow_removals"] = True
        if allow_removals_up_to:
            sync_input["allow_removals_up_to"] = allow_removals_up_to
        run = self.begin(**sync_input)
        planned = self.fs.plan(run)
        descriptors = self.fs.plans.get(planned.key)
        page_errors: dict[int, str] = {}
        for descriptor in descriptors:
            if between_pages is not None:
                between_pages(int(descriptor["page"]))
            for _ in range(page_attempts):
                try:
                    self.fs.page({**run, "page": descriptor})
                    page_errors.pop(int(descriptor["page"]), None)
                    break
                except Exception as exc:
                    page_errors[int(descriptor["page"])] = repr(exc)
        previous: dict[str, Any] | None = None
        while True:
            previous = self.fs.seams(run, previous)
            if not previous.get("more"):
                break
        tags = self.fs.tags(run)
        breaker = Breaker.of(self.fs)
        gate = breaker.gate(run, tags)
        out: dict[str, Any] = {"run": run, "gate": gate, "page_errors": page_errors, "seams": previous}
        if gate.halt:
            out["report"] = breaker.halt(run, tags)
            return out
        if before_release is not None:
            before_release()
        rel: dict[str, Any] | None = None
        while True:
            rel = breaker.release(run, rel, tags_result=tags)
            if not rel.get("more"):
                break
        out["release"] = rel
        try:
            out["report"] = self.fs.finish(run, tags)
        except TooManyPagesFailed as exc:
            out["finish_error"] = exc
            out["report"] = None
        return out


# ---- fixtures a test module imports (`from tests.integration.fullsync_harness import apsis_sim, make_world`) ----
@pytest.fixture
def apsis_sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(client_id="p17", client_secret="p17-secret", rate_limits=False).start()
    yield sim
    sim.stop()


@pytest.fixture
def make_world(
    in_process_aws: str, sim: EfficySimulator, apsis_sim: ApsisSimulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., World]]:
    """World(raw_config(**over)) on the module's simulators (the `sim` fixture resets the Efficy one, server
    knobs included). The APSIS simulator here enforces no rate limit, and the pace is not what these tests are
    about (test_apsis_budget.py and test_budget_one_client.py are): unpaced, a world's run took seconds of
    sleep at a page's share of 100 requests/s."""
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")

    def make(**over: Any) -> World:
        return World(in_process_aws, sim, apsis_sim, raw_config(**over))

    yield make
