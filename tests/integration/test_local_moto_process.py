"""moto's server in its own process (local/moto_process.py): patched there, relaying Lambda, never left behind.

The e2e tests run the whole local stack on top of it (Step Functions tasks through the relay); these check
the process itself: the patches are applied in the child, a Lambda invocation in moto reaches the parent's
handlers (result and function error), `stop()` ends it, and it exits when its parent dies without cleaning up.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from efficy_sync_tools.local.aws import client
from efficy_sync_tools.local.moto_process import LambdaRelay, MotoProcess

#: one worker for the module: its module-scoped fixture is costly, and `--dist loadgroup` spread its tests
pytestmark = pytest.mark.xdist_group("local_moto_process")

REGION = "eu-west-1"


class _Router:
    """The parent's handlers: echo the event, or raise for {"fail": true}."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def invoke_as_lambda(self, function_name: str, body: bytes, response_headers: dict[str, str]) -> bytes:
        from efficy_sync_tools.local.lambdas import FunctionRouter

        return FunctionRouter.invoke_as_lambda(self, function_name, body, response_headers)  # type: ignore[arg-type]

    def invoke(self, function_name: str, event: Any) -> Any:
        self.events.append((function_name, event))
        if event.get("fail"):
            raise ValueError("asked to fail")
        return {"echo": event, "pid": os.getpid()}


@pytest.fixture(scope="module")
def relayed() -> Iterator[tuple[MotoProcess, _Router]]:
    router = _Router()
    relay = LambdaRelay(router).start()
    moto = MotoProcess(lambda_url=relay.url).start()
    try:
        yield moto, router
    finally:
        moto.stop()
        relay.stop()


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child: reap it, or it stays a zombie that kill(0) still finds
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False


def test_the_patches_are_applied_in_moto_s_process(relayed: tuple[MotoProcess, _Router]) -> None:
    moto, _ = relayed
    assert moto.pid != os.getpid()
    assert set(moto.patches) == {"moto_speed", "moto_sqs", "moto_threads", "moto_sfn", "moto_fastpath", "lambda_relay"}
    # moto answers on the endpoint everything else uses, with keep-alive
    response = requests.get(f"{moto.endpoint}/moto-api/data.json", timeout=10)
    assert response.status_code == 200
    assert response.headers.get("Connection") != "close"


def test_a_message_move_task_is_unsupported_not_a_500_with_a_traceback(relayed: tuple[MotoProcess, _Router]) -> None:
    """`dlq redrive` asks for SQS's move task first; moto raised NotImplementedError (a 500 and a traceback in
    the stack's log). The CLI's mover takes over on UnsupportedOperation as on AWS endpoints without it."""
    from botocore.exceptions import ClientError

    moto, _ = relayed
    sqs = client("sqs", moto.endpoint, REGION)
    arn = "arn:aws:sqs:eu-west-1:123456789012:nothing-dlq"
    with pytest.raises(ClientError) as caught:
        sqs.list_message_move_tasks(SourceArn=arn)
    assert caught.value.response["Error"]["Code"].endswith("UnsupportedOperation")
    from efficy_sync_tools.redrive import unsupported

    assert unsupported(caught.value)  # the CLI falls back to its mover on it
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500


def _function(moto: MotoProcess, name: str) -> Any:
    lam = client("lambda", moto.endpoint, REGION)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = client("iam", moto.endpoint, REGION).create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return event\n")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="app.handler",
        Code={"ZipFile": buf.getvalue()},
    )
    return lam


def test_a_lambda_invocation_in_moto_runs_the_parent_s_handler(relayed: tuple[MotoProcess, _Router]) -> None:
    moto, router = relayed
    lam = _function(moto, "relayed-ok")
    result = lam.invoke(FunctionName="relayed-ok", Payload=json.dumps({"n": 1}).encode())
    assert "FunctionError" not in result
    assert json.loads(result["Payload"].read()) == {"echo": {"n": 1}, "pid": os.getpid()}
    assert router.events[-1][0].endswith("relayed-ok")


def test_a_handler_exception_is_lambda_s_function_error(relayed: tuple[MotoProcess, _Router]) -> None:
    moto, _ = relayed
    lam = _function(moto, "relayed-fail")
    result = lam.invoke(FunctionName="relayed-fail", Payload=json.dumps({"fail": True}).encode())
    assert result.get("FunctionError") == "Unhandled"
    error = json.loads(result["Payload"].read())
    assert error["errorType"] == "ValueError"  # what ASL Retry and Catch match
    assert error["errorMessage"] == "asked to fail"


def test_stop_ends_the_process_and_the_endpoint() -> None:
    moto = MotoProcess().start()
    pid = moto.pid
    assert pid is not None and moto.alive()
    moto.stop()
    assert not moto.alive()
    assert _gone(pid, within=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{moto.endpoint}/moto-api/data.json", timeout=2)
    moto.stop()  # a second stop is harmless


_ORPHAN = """
import os, signal, sys
from efficy_sync_tools.local.moto_process import MotoProcess
moto = MotoProcess().start()
print(moto.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no clean-up at all: no atexit, no stop()
"""


def test_moto_s_process_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.run([sys.executable, "-c", _ORPHAN], capture_output=True, text=True, timeout=60, check=False)
    assert parent.returncode == -signal.SIGKILL, parent.stderr[-2000:]
    child = int(parent.stdout.split()[0])
    if not _gone(child, within=10):
        os.kill(child, signal.SIGKILL)
        pytest.fail("moto's server outlived the process that started it")


def test_ctrl_c_leaves_moto_to_its_parent() -> None:
    """Ctrl-C reaches the whole process group: moto must keep serving while the stack stops in order."""
    moto = MotoProcess().start()
    try:
        assert moto.pid is not None
        os.kill(moto.pid, signal.SIGINT)
        time.sleep(0.3)
        assert moto.alive()
        assert requests.get(f"{moto.endpoint}/moto-api/data.json", timeout=10).status_code == 200
    finally:
        moto.stop()
    assert not moto.alive()


def test_every_service_of_the_template_is_warmed_before_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's process warms (imports, creates the backends of, loads the models of) the template's services
    while the local stack transforms the template: a service the template gains later, or one this moto cannot
    warm, would quietly fall back to the slow first call."""
    from efficy_sync_tools.local.moto_process import WARM_SERVICES, warm
    from efficy_sync_tools.local.template import SamTemplate

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)  # the SAM transform names ARNs in a region
    root = Path(__file__).resolve().parents[2]
    resources = SamTemplate.load(root / "template.yaml").prepare_for_moto("bucket", "key")["Resources"]
    used = {spec["Type"].split("::")[1].lower() for spec in resources.values()}
    assert used <= set(WARM_SERVICES), used - set(WARM_SERVICES)
    assert warm(REGION) == []
    assert warm(REGION, ("no-such-service",)) == ["no-such-service"]  # reported, never raised
