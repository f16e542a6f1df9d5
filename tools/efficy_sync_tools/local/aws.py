"""moto's server, and template.yaml deployed into it as a CloudFormation stack.

The local stack runs MotoServer in a process of its own (moto_process.py), where its patches are applied and
Step Functions' Lambda tasks are relayed back to the real handlers in the stack's process; tests of the
patches run it in theirs. Where moto's CloudFormation falls short (secrets, the executable state machine, SQS
triggers), the gap is filled from the same template, as contracts/aws-local.md describes.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:  # the template's YAML reader (cfn-lint) is heavy, and moto's process never needs it
    from .template import SamTemplate

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def free_port() -> int:
    """A port free now. Whoever binds it later races every other process choosing ports the same way: a
    server should bind port 0 itself (MotoServer) or hold a `reserve_port` socket until it serves."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reserve_port() -> socket.socket:
    """A listening socket on a loopback port of the kernel's choosing, held from now on: its number can be
    named (in the stack's outputs) before the server that will serve it starts (werkzeug's `fd=`), and no other
    process can take it in between."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class MotoServer:
    """moto's threaded server on loopback, configured to execute state machines and skip Docker for Lambda.

    It is moto's own server (`ThreadedMotoServer` does the same) with a request handler that keeps HTTP/1.1
    connections open: boto3 reuses its pooled connections instead of opening one per call (see keepalive.py).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or 0  # 0: the kernel chooses when the server binds (no race with other processes)
        self._server: Any = None
        self.app: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        from ..keepalive import KeepAliveHandler
        from . import moto_fastpath, moto_sfn, moto_speed, moto_sqs, moto_threads

        moto_speed.apply()
        moto_sqs.apply()
        moto_threads.apply()
        moto_sfn.apply()

        class Handler(KeepAliveHandler, MotoRequestHandler):
            """moto's handler (it keeps headers with underscores) on a keep-alive connection."""

        self.app = app = moto_fastpath.wrap(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=Handler)
        self.port = self._server.server_port
        # The Step Functions interpreter calls back into moto at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        # a stop (server.shutdown) waits for serve_forever's next poll: 0.05 s, as the front's and the simulators'
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="moto-server", daemon=True
        )
        self._thread.start()
        import requests

        config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
        # moto's backends live in this process: a second stack started here must not see the first one's.
        with requests.Session() as http:
            http.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
            http.post(f"{self.endpoint}/moto-api/config", json=config, timeout=10).raise_for_status()
        return self

    def stop(self) -> None:
        if self._server is not None:
            from ..keepalive import stop_server

            stop_server(self._server)
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


@dataclass
class DeployedStack:
    name: str
    region: str
    physical: dict[str, str]  # logical id -> physical id (name, URL or ARN)
    outputs: dict[str, str]
    state_machines: dict[str, str] = field(default_factory=dict)  # logical id -> executable ARN
    functions: dict[str, str] = field(default_factory=dict)  # logical id -> function name


def client(service: str, endpoint: str, region: str, *, pool: int = 10, agent: str | None = None) -> Any:
    """A boto3 client of the local stack; `pool` bounds the connections it keeps open (threads sharing it);
    `agent` is added to its User-Agent (moto_sqs tells the pollers' requests from the functions' by it)."""
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
        config=Config(max_pool_connections=pool, user_agent_extra=agent),
    )


@dataclass
class Package:
    """What `sam package` makes: the template CloudFormation receives, naming the code's bucket and key."""

    bucket: str
    key: str
    body: dict[str, Any]


def package(
    template: SamTemplate, stack_name: str = "efficy-sync", output_values: dict[str, str] | None = None
) -> Package:
    """The SAM transform and moto's fixes: CPU only, no AWS call, so the local stack does it while moto's
    process starts. `output_values` gives the stack outputs that point at emulated resources (the API URL)."""
    bucket = f"{stack_name}-artifacts-{free_port()}"
    return Package(bucket, "code.zip", template.prepare_for_moto(bucket, "code.zip", output_values))


def deploy(
    template: SamTemplate,
    endpoint: str,
    region: str,
    stack_name: str = "efficy-sync",
    output_values: dict[str, str] | None = None,
    *,
    packaged: Package | None = None,
) -> DeployedStack:
    """`sam package` (unless `packaged` is given) + `sam deploy` against moto, then the fixes for moto's known
    gaps."""
    packaged = packaged or package(template, stack_name, output_values)
    s3 = client("s3", endpoint, region)
    s3.create_bucket(Bucket=packaged.bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_object(Bucket=packaged.bucket, Key=packaged.key, Body=_tiny_zip())

    cfn = client("cloudformation", endpoint, region)
    cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(packaged.body), Capabilities=["CAPABILITY_IAM"])
    _wait_stack(cfn, stack_name)
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
        for r in cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
        if "LogicalResourceId" in r
    }
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    deployed = DeployedStack(stack_name, region, physical, outputs)
    deployed.functions = {lid: physical[lid] for lid in template.functions() if lid in physical}
    _disable_moto_triggers(endpoint, region)
    _create_state_machines(template, deployed, endpoint, region)
    return deployed


def _tiny_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


def _wait_stack(cfn: Any, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        if status.endswith("_COMPLETE") and "ROLLBACK" not in status:
            return
        if "FAILED" in status or "ROLLBACK" in status:
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
            reasons = [e.get("ResourceStatusReason") for e in events if e.get("ResourceStatusReason")]
            raise RuntimeError(f"stack {name} ended {status}: {reasons[:5]}")
        time.sleep(0.2)
    raise TimeoutError(f"stack {name} not created within {timeout}s")


def _disable_moto_triggers(endpoint: str, region: str) -> None:
    """moto's own SQS trigger fires once per message inside send_message and ignores partial failures.

    The local stack's poller serves the event sources instead, with Lambda's semantics.
    """
    lam = client("lambda", endpoint, region)
    for mapping in lam.list_event_source_mappings().get("EventSourceMappings", []):
        # Disable, not delete: moto keeps a deleted mapping attached to the queue and still fires it.
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)


def _create_state_machines(template: SamTemplate, stack: DeployedStack, endpoint: str, region: str) -> None:
    """moto's CloudFormation puts state machines where the executing interpreter cannot see them.

    The executable copy takes the name (and so the ARN) CloudFormation gave the template's state machine, so the
    stack's resources and outputs name the machine that runs, as on AWS."""
    sfn = client("stepfunctions", endpoint, region)
    lam = client("lambda", endpoint, region)
    for logical_id, spec in template.state_machines().items():
        definition = spec["definition"]
        for name, value in spec["substitutions"].items():
            definition = definition.replace("${" + name + "}", _resolve(value, stack, lam))
        role = f"arn:aws:iam::123456789012:role/{stack.name}-{logical_id}"
        cfn_arn = stack.physical.get(logical_id, "")
        name = cfn_arn.rsplit(":", 1)[-1] if cfn_arn.startswith("arn:") else f"{stack.name}-{logical_id}"
        arn = sfn.create_state_machine(name=name, definition=definition, roleArn=role)["stateMachineArn"]
        stack.state_machines[logical_id] = arn


def _resolve(value: Any, stack: DeployedStack, lam: Any) -> str:
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return stack.physical[value["Ref"]]
    if "Fn::GetAtt" in value:
        logical, attr = value["Fn::GetAtt"] if isinstance(value["Fn::GetAtt"], list) else value["Fn::GetAtt"].split(".")
        if attr == "Arn" and logical in stack.functions:
            return lam.get_function(FunctionName=stack.functions[logical])["Configuration"]["FunctionArn"]
        return stack.physical[logical]
    raise ValueError(f"cannot resolve substitution {value!r} locally")


def function_environment(endpoint: str, region: str, function_name: str) -> dict[str, str]:
    lam = client("lambda", endpoint, region)
    conf = lam.get_function_configuration(FunctionName=function_name)
    return dict(conf.get("Environment", {}).get("Variables", {}))
