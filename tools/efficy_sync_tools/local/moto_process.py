"""moto's server in a process of its own, so that moto and the handlers stop sharing one interpreter lock.

With moto's server in the local stack's process, every AWS call of a handler waited for the GIL that moto's
own threads held while answering it: py-spy put moto and werkzeug above 55 % of a full sync's samples, and a
10,000-record webhook took 25 s to be answered. In a child process, moto runs on its own core.

What stays the same for everything else (DESIGN.md section 5): one HTTP endpoint on loopback for every AWS
service, moto's speed and thread-safety patches applied (in the child, where moto runs), Step Functions
executing the real state machine, and its Lambda tasks running the real handlers in the local stack's
process. That last part crosses the process boundary: in the child, `LambdaSimpleBackend.invoke` posts the
invocation to a relay the parent serves (`LambdaRelay`), which calls the handler and answers with its result,
or with Lambda's function-error document (the exception's class name as errorType, which ASL Retry and Catch
match).

The child never outlives the local stack: it exits when its standard input closes, which the kernel does when
the parent exits for any reason (Ctrl-C, a test failure, SIGKILL); it ignores SIGINT so that the parent can
still use AWS while it stops on Ctrl-C, and `stop()` ends it with bounded waits (EOF, SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any

log = logging.getLogger("efficy_sync.local")

#: Header naming the function in a relayed invocation, and the one carrying Lambda's function-error flag back.
FUNCTION_HEADER = "X-Efficy-Sync-Function"
ERROR_HEADER = "X-Amz-Function-Error"
#: A relayed invocation may take as long as a Lambda may run (template.yaml's longest timeout is below it).
INVOKE_TIMEOUT = 900.0
READY = "moto ready"  # the child's first line: READY, port=<the port it serves>, then the patches it applied


class MotoProcess:
    """moto's server (local/aws.py's MotoServer, with its patches) in a child process, started and stopped here."""

    def __init__(self, port: int | None = None, *, lambda_url: str | None = None) -> None:
        self.port = port or 0  # 0: the child binds a port of the kernel's choosing and reports it when ready
        self.lambda_url = lambda_url
        self._process: subprocess.Popen[bytes] | None = None
        self.patches: list[str] = []  # what the child reports it applied (moto_* modules of this package)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60.0) -> MotoProcess:
        """Start the child and return once it serves requests with its configuration applied (or raise)."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> MotoProcess:
        """Start the child without waiting: the caller does its own start-up work meanwhile, then `wait_ready`."""
        command = [sys.executable, "-m", "efficy_sync_tools.local.moto_process", "--port", str(self.port)]
        if self.lambda_url:
            command += ["--lambda-url", self.lambda_url]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        atexit.register(self.stop)
        return self

    def wait_ready(self, timeout: float = 60.0) -> MotoProcess:
        """Return once the child serves requests with its configuration applied; else stop it and raise."""
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"moto's server did not start within {timeout:.0f}s")
                if selector.select(timeout=min(left, 0.5)):
                    chunk = os.read(self._process.stdout.fileno(), 1)
                    if not chunk:
                        code = self._process.wait(timeout=5)
                        raise RuntimeError(f"moto's server exited ({code}) before it was ready")
                    line += chunk
        self._process.stdout.close()  # the child writes its logs to stderr from here on
        words = line.decode(errors="replace").split()
        if " ".join(words[:2]) != READY or len(words) < 3 or not words[2].startswith("port="):
            raise RuntimeError(f"unexpected line from moto's server: {line!r}")
        self.port = int(words[2].removeprefix("port="))
        self.patches = words[3:]

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """End the child: its standard input closes (it stops itself), else SIGTERM, else SIGKILL; bounded."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for ending in (None, process.terminate, process.kill):
            if ending is not None:
                with contextlib.suppress(OSError):
                    ending()
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue
        log.warning("moto's server (pid %s) did not exit", process.pid)


class LambdaRelay:
    """The parent's end of Step Functions -> Lambda: serves the invocations moto's child process relays."""

    def __init__(self, router: Any = None) -> None:
        self.router = router  # set once the stack is deployed; no state machine runs before that
        self._server: Any = None
        #: set at each relayed invocation: every run begins with a Lambda task, so the stack's status events
        #: learn here that a run started without asking moto every second (LocalStack._status_loop)
        self.invoked = threading.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/invoke"

    def start(self) -> LambdaRelay:
        from werkzeug.serving import make_server

        from ..keepalive import KeepAliveHandler

        class QuietHandler(KeepAliveHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                return

        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=QuietHandler)
        threading.Thread(  # a 0.05 s poll: a stop waits for the next one (0.5 s by default)
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="lambda-relay", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.invoked.set()  # the stack's status events wake to see the stop
        if self._server is not None:
            from ..keepalive import stop_server

            stop_server(self._server)
            self._server = None

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        function = environ.get("HTTP_" + FUNCTION_HEADER.upper().replace("-", "_"), "")
        self.invoked.set()
        if self.router is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"the local stack is not deployed yet"]
        headers: dict[str, str] = {}
        result = self.router.invoke_as_lambda(function, body, headers)
        reply = [("Content-Type", "application/json")]
        if "x-amz-function-error" in headers:
            reply.append((ERROR_HEADER, headers["x-amz-function-error"]))
        start_response("200 OK", reply)
        return [result]


def relay_lambda_invocations(url: str) -> None:
    """In moto's process: Lambda invocations (Step Functions tasks) go to the local stack's handlers at `url`."""
    import requests
    from moto.awslambda_simple.models import LambdaSimpleBackend

    sessions = threading.local()

    def relayed_invoke(
        backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        http = getattr(sessions, "http", None)
        if http is None:
            http = sessions.http = requests.Session()
        data = body.encode() if isinstance(body, str) else (body or b"")
        response = http.post(url, data=data, headers={FUNCTION_HEADER: function_name}, timeout=INVOKE_TIMEOUT)
        response.raise_for_status()  # the relay itself failed: moto answers a 500, as Lambda's service error
        if response.headers.get(ERROR_HEADER):
            response_headers["x-amz-function-error"] = response.headers[ERROR_HEADER]
        return response.content

    LambdaSimpleBackend.invoke = relayed_invoke  # type: ignore[method-assign]


#: A factor (0 < f <= 1) for the waits of the state machine's Retry policies (IntervalSeconds, BackoffRate, jitter),
#: for test stacks: moto sleeps them at full length, seconds of idle time per retried page. Unset: full length.
RETRY_SCALE_ENV = "EFFICY_SYNC_LOCAL_SFN_RETRY_SCALE"


def scale_state_machine_retries(factor: float) -> None:
    """In moto's process: a Retry's wait, as moto's interpreter computed it, is slept `factor` times as long. What
    is retried, how often and in what order is unchanged (as the pollers' shorter `retry_delay` for SQS)."""
    from types import SimpleNamespace

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    retrier_decl.time = SimpleNamespace(sleep=lambda seconds: time.sleep(seconds * factor))  # type: ignore[attr-defined]


def _retry_scale() -> float | None:
    try:
        factor = float(os.environ.get(RETRY_SCALE_ENV, ""))
    except ValueError:
        return None
    return factor if 0 < factor < 1 else None


#: The services the local stack's template uses (CloudFormation deploys it; STS answers boto3's identity calls).
#: moto's server imports a service's backend, creates its per-account backend and loads its botocore model on
#: the first request; `warm` does that before READY, while the parent reads the template (about 2 s of each
#: process's CPU that no longer run one after the other). A service missing here is only slower on first use.
WARM_SERVICES = (
    "cloudformation",
    "s3",
    "sqs",
    "dynamodb",
    "lambda",
    "stepfunctions",
    "iam",
    "sns",
    "cloudwatch",
    "logs",
    "events",
    "apigateway",
    "secretsmanager",
    "ssm",
    "kms",
    "sts",
)


def warm(region: str, services: tuple[str, ...] = WARM_SERVICES) -> list[str]:
    """Import moto's backends of `services`, create their backends of moto's default account in `region` (or
    the global one) and load their service models; returns those that could not be warmed (never raises: a cold
    service still works, as before)."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.utils import get_service_model

    cold = []
    for name in services:
        try:
            regions = get_backend(name)[DEFAULT_ACCOUNT_ID]  # type: ignore[call-overload]
            for where in (region, "global", "aws"):
                with contextlib.suppress(KeyError):
                    regions[where]
                    break
            get_service_model(name)
        except Exception:  # warming is an optimisation: whatever fails is done lazily, as before
            cold.append(name)
    return cold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto's server for the local stack (started by it)")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): a free port, reported when ready")
    parser.add_argument("--lambda-url", help="the local stack's Lambda relay; without it moto's own Lambda runs")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for name in ("werkzeug", "moto.stepfunctions.parser.asl.parse.preprocessor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from . import moto_fastpath, moto_sfn, moto_speed, moto_sqs, moto_threads
    from .aws import MotoServer

    server = MotoServer(args.port).start()  # applies the patches, in this process
    patches = [
        name
        for name, applied in (
            ("moto_speed", moto_speed._applied),
            ("moto_sqs", moto_sqs._applied),
            ("moto_threads", moto_threads.applied()),
            ("moto_sfn", moto_sfn._applied),
            ("moto_fastpath", moto_fastpath.wrap(server.app) is server.app),
        )
        if applied
    ]
    if args.lambda_url:
        relay_lambda_invocations(args.lambda_url)
        patches.append("lambda_relay")
    if (factor := _retry_scale()) is not None:
        scale_state_machine_retries(factor)
    cold = warm(os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    if cold:
        log.warning("moto's backends not warmed (imported on first use): %s", ", ".join(cold))
    try:
        os.write(sys.stdout.fileno(), f"{READY} port={server.port} {' '.join(patches)}\n".encode())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        while sys.stdin.buffer.read(4096):  # until the parent closes it, or exits
            pass
    finally:
        # The parent is done with moto (or gone). Ending the process closes the listening socket and every kept-alive
        # connection at once (clients see a stopped server, as `MotoServer.stop` would make them), and skips the
        # server's shutdown poll and the interpreter's teardown of moto's modules: about 1.3 s that every local
        # stack's stop (each test module's) waited for.
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
