"""Helpers for tests that drive the product through the embedded local stack, as an outside script would.

The stack runs in its own process (`efficy-sync local up --ready-file F`), so tests talk to it only through
its public interfaces: the API URL, the AWS endpoint, the simulators' HTTP control APIs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import requests
from efficy_sync_tools.local.iam import DENIED_MARK
from efficy_sync_tools.testing import wait_for

ROOT = Path(__file__).resolve().parents[1]
_keys = itertools.count(1)


class ManualClock:
    """Epoch seconds that move only when the test says (`advance`): what a client or simulator that takes a
    `clock` reads instead of time.time(), so a test expires a token without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else start  # whole seconds, as a JWT's claims are

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def share_botocore_data() -> None:
    """One botocore data loader per process and data path, instead of one per session.

    moto's `mock_aws` starts each test with no default boto3 session, so every test that makes a client made a
    new session, and with it a new loader that read and parsed the service models again (DynamoDB's, SQS's,
    Step Functions', the endpoints): a profile of the whole suite's workers found client creation at about a
    sixth of their time, most of it JSON parsing. The models are the installed botocore's, read-only once
    loaded (botocore's own loader already hands the same objects to every client of a session), so sharing
    the loader changes what no test sees. Tests only: the product's clients are created once per process.
    """
    import botocore.loaders
    import botocore.session

    if not hasattr(botocore.session.create_loader, "cache_info"):
        botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)  # type: ignore[assignment]


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Efficy-Timestamp": ts, "X-Efficy-Signature": f"sha256={digest}", "Content-Type": "application/json"}


class Stack:
    """A running local stack, read from its ready file."""

    def __init__(self, ready: dict[str, Any], process: subprocess.Popen, log_path: Path) -> None:
        self.ready = ready
        self.process = process
        self.log_path = log_path
        self.http = requests.Session()
        self.api_url = ready["api_url"]
        self.efficy_url = ready["efficy_url"]
        self.apsis_url = ready["apsis_url"]
        self.demo = ready["demo"]
        self.names = ready["stack"]

    # ---- AWS ------------------------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.ready["aws_endpoint"],
            region_name=self.ready["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def queue_depth(self, logical_id: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=self.names[logical_id],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def json_log_lines(self, since: int = 0) -> list[dict[str, Any]]:
        """The JSON lines the handlers (logger and EMF metrics) logged after `since` bytes of the stack's log;
        other lines are the local stack's own."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        lines = []
        for raw in text.splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        return lines

    def idle(self, timeout: float = 60) -> None:
        """Every change so far fully processed: the Efficy simulator's batched webhooks delivered (it sends them
        from a background thread: an earlier test's edit could still reach the route after the queues were seen
        empty, which failed a "nothing enqueued" check), then both queues drained, visible and in flight (our
        routes enqueue before they answer; a message leaves the queue once its handler returned)."""
        flushed = self.http.post(
            f"{self.efficy_url}/_sim/webhooks/flush", json={"timeout": timeout}, timeout=timeout + 5
        )
        assert flushed.json()["flushed"], "the Efficy simulator's webhooks were not delivered"
        wait_for(
            "idle queues",
            lambda: self.queue_depth("ContactChangesQueue") == 0 and self.queue_depth("OptOutQueue") == 0,
            timeout=timeout,
        )

    def env(self) -> dict[str, str]:
        """Environment for running the CLI or library code against this stack."""
        return {
            **os.environ,
            "AWS_ENDPOINT_URL": self.ready["aws_endpoint"],
            "AWS_REGION": self.ready["region"],
            "AWS_DEFAULT_REGION": self.ready["region"],
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "CONFIG_TABLE": self.names["ConfigTable"],
            "STATE_TABLE": self.names["StateTable"],
            "CONTACT_QUEUE_URL": self.names["ContactChangesQueue"],
            "OPTOUT_QUEUE_URL": self.names["OptOutQueue"],
            "STATE_MACHINE_ARN": self.names.get("state_machine_arn", ""),
            "PAGES_BUCKET": self.names.get("PagesBucket", ""),
        }

    def cli(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "efficy_sync_tools.cli", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"efficy-sync {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    # ---- Efficy simulator -------------------------------------------------------------------------------
    def seed(self, persons: list[dict[str, Any]], *, notify: bool = False) -> None:
        self.http.post(
            f"{self.efficy_url}/_sim/persons", json={"persons": persons, "notify": notify}, timeout=10
        ).raise_for_status()

    def edit(self, key: int, **changes: Any) -> None:
        """What a CRM user does in Efficy: the simulator then sends the signed webhook."""
        self.http.patch(f"{self.efficy_url}/_sim/persons/{key}", json=changes, timeout=10).raise_for_status()

    def stored_state(self, key: int, integration_id: str = "demo") -> dict[str, Any]:
        """The person's stored sync state document (consistent read), {} when none."""
        item = (
            self.client("dynamodb")
            .get_item(
                TableName=self.names["StateTable"],
                Key={"pk": {"S": f"PERSON#{integration_id}#{key}"}, "sk": {"S": "STATE"}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return json.loads(item["doc"]["S"]) if item else {}

    def efficy_person(self, key: int) -> dict[str, Any] | None:
        r = self.http.get(f"{self.efficy_url}/_sim/persons/{key}", timeout=10)
        return r.json() if r.status_code == 200 else None

    # ---- APSIS simulator --------------------------------------------------------------------------------
    def profile(self, key: int | str) -> dict[str, Any] | None:
        r = self.http.get(f"{self.apsis_url}/_sim/profiles/com.apsis1.keyspaces.crm-id/{key}", timeout=10)
        return r.json() if r.status_code == 200 else None

    def apsis_calls(self) -> dict[str, int]:
        return self.http.get(f"{self.apsis_url}/_sim/calls", timeout=10).json()

    def efficy_calls(self) -> dict[str, int]:
        return self.http.get(f"{self.efficy_url}/_sim/calls", timeout=10).json()

    def fault(self, sim: str, **spec: Any) -> None:
        url = self.efficy_url if sim == "efficy" else self.apsis_url
        self.http.post(f"{url}/_sim/faults", json=spec, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        for url in (self.efficy_url, self.apsis_url):
            self.http.delete(f"{url}/_sim/faults", timeout=10)

    # ---- the product's API ------------------------------------------------------------------------------
    def post_webhook(self, body: bytes, headers: dict[str, str], integration_id: str = "demo") -> requests.Response:
        return self.http.post(
            f"{self.api_url}/integrations/{integration_id}/efficy/webhook", data=body, headers=headers, timeout=60
        )

    def signed_webhook(self, records: list[dict[str, Any]], integration_id: str = "demo") -> requests.Response:
        body = json.dumps({"database": "sim", "version": "12.1", "records": records}).encode()
        return self.post_webhook(body, sign(self.demo["webhook_secret"], body), integration_id)

    def create_integration(self, workdir: Path, **changes: Any) -> str:
        """A new integration like `demo` (same simulators and secrets), with `changes` on top; returns its id."""
        import uuid

        import yaml

        data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
        integration_id = changes.pop("integration_id", f"t-{uuid.uuid4().hex[:10]}")
        data["integration_id"] = integration_id
        data["efficy"]["base_url"] = f"{self.efficy_url}/crm"
        data["apsis"]["base_url"] = self.apsis_url
        data.update(changes)
        path = workdir / f"{integration_id}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.cli("config", "apply", str(path), "--by", "tests", check=True)
        return integration_id

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    """Ends a local stack started in a process of its own: SIGTERM (it stops cleanly), then kill after 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_stack(
    workdir: Path, timeout: float = 120.0, *, env: dict[str, str] | None = None, quiet: bool = True
) -> Stack:
    """`env` overrides the stack's environment (e.g. POWERTOOLS_LOG_LEVEL); `quiet=False` keeps the handlers'
    INFO logs in `Stack.log_path`."""
    ready_file = workdir / "ready.json"
    log_path = workdir / "stack.log"
    stack_env = {
        **os.environ,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONWARNINGS": "ignore",
        # Tests inject faults: retry fast inside a call, and a few times only, so a failure surfaces in seconds.
        "EFFICY_SYNC_HTTP_RETRIES": "3",
        "EFFICY_SYNC_HTTP_BACKOFF": "0.02",
        "EFFICY_SYNC_HTTP_READ_TIMEOUT": "5",
        # The workers' retry delays at the local stack's first delay (1 s), not growing to 2 s: a change that
        # fails on every receive reaches the DLQ after its ten receives in about 9 s instead of 17 (the growth
        # itself is checked in tests/integration/test_redelivery.py); what is retried and how often is unchanged.
        "EFFICY_SYNC_RETRY_MAX_SECONDS": "1",
        # The state machine's Retry waits (2 or 5 s and growing, jittered) a tenth as long in moto's process
        # (local/moto_process.py): a page that fails is still retried by the same policy, as often, sooner.
        "EFFICY_SYNC_LOCAL_SFN_RETRY_SCALE": "0.1",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "efficy_sync_tools.cli", "local", "up", "--ready-file", str(ready_file)]
    process = launch_stack([*argv, *(["--quiet"] if quiet else [])], stack_env, ready_file, log_path, timeout)
    return Stack(json.loads(ready_file.read_text()), process, log_path)


def launch_stack(
    argv: list[str], env: dict[str, str], ready_file: Path, log_path: Path, timeout: float
) -> subprocess.Popen:
    """Starts `efficy-sync local up --ready-file F` (`argv`) with its output in `log_path`, and returns once the
    ready file is written; a stack that exits or is not ready within `timeout` fails with its log's end."""
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"local stack exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"local stack not ready after {timeout}s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    return process


def unique_key() -> int:
    """Person keys no other test in this run uses (tests share one stack per xdist worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return 100_000 * (int(worker or 0) + 1) + 100 * next(_keys)


def person(key: int, **fields: Any) -> dict[str, Any]:
    """An active, non-Robinson person with a valid e-mail, in the newsletter profile (12)."""
    base = {
        "K_CONTACT": key,
        "NAME": f"Name{key}",
        "FIRSTNAME": f"First{key}",
        "EMAIL1": f"p{key}@example.com",
        "MOBILE": f"+32470{key % 1000000:06d}",
        "LANGUAGE": "EN",
        "OPENED": "1",
        "ROBINSON": "0",
        "profiles": [12],
    }
    base.update(fields)
    return base


def create_pk_sk_table(name: str, region: str | None = None) -> None:
    """A table shaped like the stack's CONFIG and STATE tables (string pk/sk), for tests on in-process moto."""
    boto3.client("dynamodb", region_name=region).create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )


def create_template_table(logical_id: str, name: str, region: str | None = None) -> None:
    """A table built from template.yaml's definition of `logical_id` (keys and indexes), as the stack builds it,
    for tests on in-process moto: an index the template declares is the index the test uses."""
    boto3.client("dynamodb", region_name=region).create_table(
        TableName=name, **json.loads(_table_definition(logical_id))
    )


@functools.cache
def _table_definition(logical_id: str) -> str:
    """template.yaml's keys and indexes of a table, as JSON: parsed once per process (the template is read with
    cfn-lint's loader, a few hundred milliseconds, and dozens of tests build tables from it)."""
    from efficy_sync_tools.local.template import SamTemplate

    props = SamTemplate.load(ROOT / "template.yaml").raw["Resources"][logical_id]["Properties"]
    wanted = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
    return json.dumps({k: props[k] for k in wanted if k in props})


#: the APSIS calls that create a profile, whichever way the client creates it: the two-call create
#: (POST .../profiles) or the one-call v1 attribute PATCH (apsis.create_with_attribute_patch); a fault that
#: slows or fails "the creates" must match both, or it silently stops applying when the client changes
APSIS_CREATES = r"(/sections/[^/]+/profiles|^/audience/keyspaces/[^/]+/profiles/[^/]+/sections/[^/]+/attributes)$"


def iam_refusals(log_path: Path, offset: int) -> list[str]:
    """The calls the local stack refused as IAM would (local/iam.py) logged after `offset` bytes of its log."""
    with log_path.open("rb") as log:
        log.seek(offset)
        return [line for line in log.read().decode(errors="replace").splitlines() if DENIED_MARK in line]


#: what the write-back Lambda reads from its environment (template.yaml), for the tests that load its handler
WRITE_BACK_ENV = {
    "CONFIG_TABLE": "config",
    "STATE_TABLE": "state",
    "CONTACT_QUEUE_URL": "https://sqs.example/changes",
    "OPTOUT_QUEUE_URL": "https://sqs.example/optouts",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def load_function(function: str, module_name: str, env: dict[str, str], monkeypatch: Any) -> Any:
    """functions/<function>/app.py imported afresh as `module_name`, its environment set first (the settings it
    reads at import are read again)."""
    import importlib.util

    from efficy_sync.settings import settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / function / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def simulated_apis(region: str, persons: list[dict[str, Any]], client_id: str, policy: Any) -> Any:
    """The state table in moto, both simulators started (Efficy holding `persons`, APSIS knowing API client
    `client_id` with secret `<client_id>-secret`) and an Efficy client: what the race tests of one person's sync
    stand on. A context manager yielding {"esim", "asim", "efficy", "states"}; the simulators stop on exit."""
    from contextlib import contextmanager

    from efficy_sync.clients.efficy import EfficyClient
    from efficy_sync.store.persons import PersonStateStore
    from efficy_sync_tools.sims.apsis import ApsisSimulator
    from efficy_sync_tools.sims.efficy import EfficySimulator

    @contextmanager
    def started() -> Any:
        create_template_table("StateTable", "state", region)
        esim = EfficySimulator().start()
        asim = ApsisSimulator(client_id=client_id, client_secret=f"{client_id}-secret", rate_limits=False).start()
        try:
            esim.upsert_persons(persons)
            with EfficyClient(esim.url, esim.api_key, policy=policy) as efficy:
                yield {"esim": esim, "asim": asim, "efficy": efficy, "states": PersonStateStore("state")}
        finally:
            esim.stop()
            asim.stop()

    return started()
