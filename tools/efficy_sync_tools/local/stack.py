"""`efficy-sync local up`: the whole product offline: this process and moto's server in a child process.

moto's server (AWS, in its own process: moto_process.py), template.yaml deployed into it, the real handlers dispatched in-process, the SQS event
sources served by our poller, an HTTP front for the API routes, the scheduled sweeper and Step Functions
status events, and both simulators, with a ready integration `demo` wired to them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("efficy_sync.local")

REGION = "eu-west-1"
#: at most this long, a stop waits for the batches the pollers are delivering (normally well under a second)
DRAIN_SECONDS = 10.0
#: the status events look at the executions each second while one runs (EventBridge delivers within seconds);
#: while none runs, at the first Lambda task moto relays (every run begins with one), else this often, for a run
#: that ends before any task. Asking every second on an idle stack was a fifth of its idle CPU.
STATUS_SECONDS = 1.0
STATUS_IDLE_SECONDS = 5.0
DEMO_ID = "demo"
DEMO_SECRETS = {
    "efficy_api_key_secret": f"efficy-sync/{DEMO_ID}/efficy",
    "webhook_secret_secret": f"efficy-sync/{DEMO_ID}/webhook",
    "apsis_credentials_secret": f"efficy-sync/{DEMO_ID}/apsis",
    "optout_token_secret": f"efficy-sync/{DEMO_ID}/apsis-optout",
}


def find_project_root(start: Path | None = None) -> Path:
    """The folder holding template.yaml: the working directory or one above it, else the source checkout."""
    for base in [start or Path.cwd(), *(start or Path.cwd()).parents]:
        if (base / "template.yaml").is_file():
            return base
    here = Path(__file__).resolve()
    for base in here.parents:
        if (base / "template.yaml").is_file():
            return base
    raise FileNotFoundError("template.yaml not found: run from the efficy-sync checkout")


@dataclass
class LocalStack:
    root: Path = field(default_factory=find_project_root)
    region: str = REGION
    stack_name: str = "efficy-sync"
    retry_delay: int = 1
    sweep_interval: float = 5.0
    poll_workers: int = 2

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.pollers: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}
        self._hidden: dict[str, frozenset[str]] = {}

    # ---- start ---------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        started = time.monotonic()
        self._environment()
        from .moto_process import LambdaRelay, MotoProcess

        # Step Functions' Lambda tasks come back from moto's process through the relay (to self.router).
        self.relay = LambdaRelay(None).start()
        # moto's process is the longest step of a start (about 2 s to import and warm moto): it is launched before
        # this process imports boto3, cfn-lint and the SAM translator (about 1 s), which then overlap with it.
        self.moto = MotoProcess(lambda_url=self.relay.url).launch()
        from . import log_keys
        from .aws import client, deploy, package, reserve_port
        from .lambdas import FunctionRouter, carry_scope_into_pools
        from .template import SamTemplate

        # While moto's process starts and warms (moto_process.warm), this one transforms the template.
        self.template = SamTemplate.load(self.root / "template.yaml")
        # The HTTP front's port is taken first (held until the front serves it), so that the stack's ApiUrl
        # output names it, as on AWS.
        self._front_socket = reserve_port()
        self.front_port = self._front_socket.getsockname()[1]
        packaged = package(self.template, self.stack_name, {"ApiUrl": self._api_url()})
        self.moto.wait_ready()
        os.environ["AWS_ENDPOINT_URL"] = self.moto.endpoint
        self._reset_shared_clients()
        self.stack = deploy(self.template, self.moto.endpoint, self.region, self.stack_name, packaged=packaged)
        self._function_environment()
        self.router = FunctionRouter(self.template.functions(), self.stack.functions, self.region, self._hidden)
        carry_scope_into_pools()
        log_keys.isolate()  # each invocation logs its own function's keys, as on Lambda
        self._enforce_iam()
        self.relay.router = self.router
        self.sqs = client("sqs", self.moto.endpoint, self.region)
        self._start_simulators()
        self._start_front()
        demo = self._create_demo_integration()
        self._start_pollers()
        self._start_schedules()
        self._start_status_events()
        self.ready = self._ready_document(demo)
        log.info("local stack ready in %.1fs", time.monotonic() - started)
        return self.ready

    def _environment(self) -> None:
        # moto's request lines and its "ToleratedFailurePercentage has no effect" notice are noise here.
        for name in ("werkzeug", "moto.stepfunctions.parser.asl.parse.preprocessor"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ["AWS_DEFAULT_REGION"] = self.region
        os.environ["AWS_REGION"] = self.region
        os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EfficySync")
        os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "efficy-sync")
        os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"  # no X-Ray daemon here: nothing may try to emit a segment
        os.environ.setdefault("EFFICY_SYNC_CACHE_SECONDS", "2")
        # the workers' growing retry delays (efficy_sync/redelivery.py: 30 s doubling up to 6 h on AWS) in
        # seconds here, like the pollers' retry_delay: a failed message comes back after 1, 2, 2 ... s
        os.environ.setdefault("EFFICY_SYNC_RETRY_FIRST_SECONDS", str(self.retry_delay))
        os.environ.setdefault("EFFICY_SYNC_RETRY_MAX_SECONDS", str(2 * self.retry_delay))
        # and a refused APSIS token request is not asked again for that long, not a minute (clients/token_hold.py)
        os.environ.setdefault("EFFICY_SYNC_TOKEN_HOLD_SECONDS", str(self.retry_delay))

    def _reset_shared_clients(self) -> None:
        from efficy_sync import aws

        aws.reset_clients()
        from efficy_sync import secrets as shared_secrets

        shared_secrets.reset()

    def _function_environment(self) -> None:
        """Every function's variables, as CloudFormation resolved them, go into this process's environment.

        They are the same for all functions (Globals) or unique to one. The handlers run in this one process,
        so each function's settings leave out the variables only other functions have (`self._hidden`, see
        lambdas.FunctionRouter.scope): a handler cannot rely on a variable its function lacks on AWS.
        The state machine ARN is swapped for the executable copy (see aws._create_state_machines).
        """
        from .aws import function_environment
        from .lambdas import hidden_variables

        swap = {self.stack.physical[lid]: arn for lid, arn in self.stack.state_machines.items()}
        # A log level or metrics switch the user set for this run wins over the template's defaults.
        keep = {k for k in os.environ if k.startswith("POWERTOOLS_")}
        own: dict[str, set[str]] = {}
        for lid, name in self.stack.functions.items():
            variables = function_environment(self.moto.endpoint, self.region, name)
            own[lid] = set(variables)
            for key, value in variables.items():
                if key not in keep:
                    os.environ[key] = swap.get(value, value)
        self._hidden = hidden_variables(own)
        from efficy_sync import settings

        settings.settings.cache_clear()

    def _enforce_iam(self) -> None:
        """Each function's AWS calls are checked against its own role (local/iam.py says why and how)."""
        import boto3
        from efficy_sync.settings import function_scope

        from .aws import client
        from .iam import build

        lam = client("lambda", self.moto.endpoint, self.region)
        roles = {
            lid: lam.get_function_configuration(FunctionName=name)["Role"].rsplit("/", 1)[-1]
            for lid, name in self.stack.functions.items()
        }

        def scope() -> str | None:
            current = function_scope.get()
            return current[0] if current else None

        machines = [(self.stack.physical.get(lid, ""), arn) for lid, arn in self.stack.state_machines.items()]
        self.iam = build(client("iam", self.moto.endpoint, self.region), roles, self.region, scope, machines)
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        self.iam.install(boto3.DEFAULT_SESSION.events)  # the shared clients (efficy_sync.aws) are built from it
        self._reset_shared_clients()

    def _start_simulators(self) -> None:
        from efficy_sync_tools.sims.apsis import ApsisSimulator
        from efficy_sync_tools.sims.efficy import EfficySimulator

        self.efficy_api_key = secrets.token_hex(16)
        self.apsis_client_id = "local-" + secrets.token_hex(4)
        self.apsis_client_secret = secrets.token_urlsafe(24)
        self.efficy = EfficySimulator(api_key=self.efficy_api_key).start()
        self.apsis = ApsisSimulator(client_id=self.apsis_client_id, client_secret=self.apsis_client_secret).start()

    def _stage(self) -> str:
        return str(self.template.raw.get("Parameters", {}).get("Stage", {}).get("Default", "dev"))

    def _api_url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}/{self._stage()}"

    def _start_front(self) -> None:
        from .front import ApiFront

        self.front = ApiFront(
            self.template.api_routes(),
            self.router,
            stage=self._stage(),
            sock=self._front_socket,
            binary_media_types=self.template.binary_media_types(),
        )
        self.front.start()

    def _create_demo_integration(self) -> dict[str, Any]:
        from efficy_sync.config import load_config_text
        from efficy_sync.settings import settings
        from efficy_sync.store.configs import ConfigStore

        from .aws import client

        webhook_secret = secrets.token_urlsafe(32)
        optout_token = secrets.token_urlsafe(32)
        sm = client("secretsmanager", self.moto.endpoint, self.region)
        values = {
            DEMO_SECRETS["efficy_api_key_secret"]: self.efficy_api_key,
            DEMO_SECRETS["webhook_secret_secret"]: webhook_secret,
            DEMO_SECRETS["apsis_credentials_secret"]: json.dumps(
                {"client_id": self.apsis_client_id, "client_secret": self.apsis_client_secret}
            ),
            DEMO_SECRETS["optout_token_secret"]: optout_token,
        }
        for name, value in values.items():
            sm.create_secret(Name=name, SecretString=value)
        text = (self.root / "examples" / "demo.yaml").read_text()
        cfg = load_config_text(text)
        cfg = cfg.model_copy(
            update={
                "efficy": cfg.efficy.model_copy(update={"base_url": self.efficy.url}),
                "apsis": cfg.apsis.model_copy(update={"base_url": self.apsis.url}),
            }
        )
        ConfigStore(settings().config_table).put(cfg, applied_by="local-stack", comment="demo integration")
        # What the demo config refers to must exist in Efficy, as a consultant would have set it up.
        self.efficy.set_queries([{"K_QUERY": q.query, "name": q.tag.upper(), "members": []} for q in cfg.tags.queries])
        api_url = self.front.url
        self.efficy.configure_webhook(
            f"{api_url}/integrations/{DEMO_ID}/efficy/webhook", webhook_secret, mode="hmac", batch_ms=200
        )
        self.apsis.configure_webhook(
            f"{api_url}/integrations/{DEMO_ID}/apsis/optout", headers={cfg.apsis.optout_token_header: optout_token}
        )
        return {
            "integration_id": DEMO_ID,
            "webhook_secret": webhook_secret,
            "optout_token": optout_token,
            **DEMO_SECRETS,
        }

    def _start_pollers(self) -> None:
        from .aws import client
        from .moto_sqs import POLLER_AGENT
        from .poller import SqsPoller

        for source in self.template.sqs_sources():
            url = self.stack.physical[source.queue]
            arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            poller = SqsPoller(
                source,
                url,
                arn,
                self.router,
                # its own client: each worker holds a connection in its long poll, plus one to delete with
                client("sqs", self.moto.endpoint, self.region, pool=2 * self.poll_workers + 2, agent=POLLER_AGENT),
                region=self.region,
                workers=self.poll_workers,
                retry_delay=self.retry_delay,
            )
            poller.start()
            self.pollers[source.function] = poller

    def _start_schedules(self) -> None:
        for schedule in self.template.schedules():
            interval = min(schedule.rate_seconds, self.sweep_interval)
            self._spawn(
                f"schedule-{schedule.function}", self._schedule_loop, schedule.function, schedule.input, interval
            )

    def _schedule_loop(self, function: str, payload: dict[str, Any], interval: float) -> None:
        while not self._stop.wait(interval):
            event = {
                "version": "0",
                "id": secrets.token_hex(8),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "region": self.region,
                "resources": [],
                "detail": {},
                **payload,
            }
            try:
                self.router.invoke(function, event)
            except Exception:
                log.exception("scheduled %s failed", function)

    def _start_status_events(self) -> None:
        """moto emits no EventBridge "Execution Status Change": watch executions and deliver them ourselves."""
        rules = self.template.event_rules()
        if rules and self.stack.state_machines:
            self._spawn("status-events", self._status_loop, rules)

    def _status_loop(self, rules: list[Any]) -> None:
        from .aws import client

        sfn = client("stepfunctions", self.moto.endpoint, self.region)
        seen: dict[str, str] = {}
        running = True  # look once at the start
        while not self._stop.is_set():
            if running:
                self._stop.wait(STATUS_SECONDS)
            else:
                self.relay.invoked.wait(STATUS_IDLE_SECONDS)
            self.relay.invoked.clear()
            if self._stop.is_set():
                return
            running = False
            for logical_id, arn in self.stack.state_machines.items():
                try:
                    executions = sfn.list_executions(stateMachineArn=arn, maxResults=100)["executions"]
                except Exception:  # moto going down, or a blip: look again next tick
                    log.debug("list_executions failed", exc_info=True)
                    running = True
                    continue
                running = running or any(ex["status"] == "RUNNING" for ex in executions)
                for ex in executions:
                    status = ex["status"]
                    if seen.get(ex["executionArn"]) == status:
                        continue
                    seen[ex["executionArn"]] = status
                    event = self._status_event(ex, self.stack.physical.get(logical_id, arn))
                    for rule in rules:
                        if _matches(rule.pattern, event):
                            try:
                                self.router.invoke(rule.function, event)
                            except Exception:
                                log.exception("status event handler %s failed", rule.function)

    def _status_event(self, ex: dict[str, Any], cfn_arn: str) -> dict[str, Any]:
        return {
            "version": "0",
            "id": secrets.token_hex(8),
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "123456789012",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": self.region,
            "resources": [ex["executionArn"]],
            "detail": {
                "executionArn": ex["executionArn"],
                "stateMachineArn": ex["stateMachineArn"],
                "name": ex["name"],
                "status": ex["status"],
                "startDate": int(ex["startDate"].timestamp() * 1000) if ex.get("startDate") else None,
                "stopDate": int(ex["stopDate"].timestamp() * 1000) if ex.get("stopDate") else None,
            },
            "_cfn_state_machine_arn": cfn_arn,
        }

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _ready_document(self, demo: dict[str, Any]) -> dict[str, Any]:
        physical = self.stack.physical
        stack: dict[str, Any] = {
            "name": self.stack_name,
            "functions": self.stack.functions,
            "state_machine_arn": next(iter(self.stack.state_machines.values()), ""),
        }
        for logical_id, res in self.template.resources.items():
            if res.get("Type") in {"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket"}:
                stack[logical_id] = physical.get(logical_id, "")
        return {
            "api_url": self.front.url,
            "aws_endpoint": self.moto.endpoint,
            "region": self.region,
            "efficy_url": self.efficy.url,
            "apsis_url": self.apsis.url,
            "stack": stack,
            "demo": demo,
        }

    # ---- run / stop ----------------------------------------------------------------------------------
    def idle(self) -> bool:
        """No batch in flight and the event-source queues empty (visible and in flight)."""
        if any(p.busy for p in self.pollers.values()):
            return False
        for poller in self.pollers.values():
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=poller.queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if int(attrs["ApproximateNumberOfMessages"]) or int(attrs["ApproximateNumberOfMessagesNotVisible"]):
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        # Inputs first: a webhook the simulators sent after moto stopped was refused ("webhook not queued: SQS
        # could not be reached", at every make bench's stack stop).
        for sim in ("efficy", "apsis"):
            if hasattr(self, sim):
                getattr(self, sim).stop_webhooks()
        for poller in self.pollers.values():
            poller.signal_stop()  # all at once: each may be in a long poll
        drained_by = time.monotonic() + DRAIN_SECONDS
        for poller in self.pollers.values():  # a batch in a handler ends while AWS and the simulators still answer
            poller.wait_idle(max(0.0, drained_by - time.monotonic()))
        if hasattr(self, "moto"):
            self.moto.stop()  # first: a long poll ends with the server instead of a second later
        for poller in self.pollers.values():
            poller.stop()
        for part in ("front", "efficy", "apsis"):
            if hasattr(self, part):
                getattr(self, part).stop()
        if getattr(self, "_front_socket", None) is not None and not hasattr(self, "front"):
            self._front_socket.close()  # reserved, never served (the start failed before the front)
        if hasattr(self, "relay"):
            self.relay.stop()


def _matches(pattern: Any, event: Any) -> bool:
    """EventBridge's pattern rules, as far as our template uses them: lists of allowed values, nested."""
    if isinstance(pattern, dict):
        if not isinstance(event, dict):
            return False
        return all(key in event and _matches(value, event[key]) for key, value in pattern.items())
    if isinstance(pattern, list):
        if any(isinstance(p, dict) for p in pattern):
            return True  # content filters (prefix, anything-but…) are not needed offline
        return event in pattern
    return pattern == event
