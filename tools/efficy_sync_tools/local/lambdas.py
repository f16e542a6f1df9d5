"""Runs the real handlers in-process, as Lambda would: one module per function, named by template.yaml.

Two callers: the local stack's own event sources (HTTP front, SQS poller, schedules, status events) call
`invoke()` directly; Step Functions tasks reach Lambda through moto, whose `LambdaSimpleBackend.invoke` is
relayed here from moto's process (moto_process.py), so the real `statemachines/full_sync.asl.json` drives the real handlers (Map, Retry and Catch
included: an exception becomes a FunctionError whose errorType is the exception's class name).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import log_keys
from .template import FunctionSpec

log = logging.getLogger("efficy_sync.local")


@dataclass
class LambdaContext:
    """The attributes powertools and our handlers read from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""
    aws_request_id: str = ""
    timeout_seconds: int = 30
    _started: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._started + self.timeout_seconds - time.monotonic()) * 1000))


def hidden_variables(own: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    """By function, the variables other functions have and it has not: what its handler must not see when every
    function's variables share one process's environment."""
    every: set[str] = set().union(*own.values())
    return {function: frozenset(every - keys) for function, keys in own.items()}


def carry_scope_into_pools() -> None:
    """The work a handler hands to a ThreadPoolExecutor runs in the handler's function scope, and in nothing else
    of its context.

    Why: on Lambda a process is one function, so a pool thread reads that function's settings and acts under its
    role. Here every function shares one process, and threads do not inherit context variables, so a pool
    thread's calls were neither in the function's settings scope nor checked against its role (local/iam.py):
    the SQS batches of the webhook split, DynamoDB batch writes, the import files' threads. Only the scope (and
    the log keys its function appended, log_keys.py) is carried: a pool thread starts with an otherwise empty context, as on Lambda, so code that forgets to pass its
    deadline or correlation id to its threads fails here as it would there. Idempotent."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from efficy_sync.settings import function_scope

    original = ThreadPoolExecutor.submit
    if getattr(original, "carries_function_scope", False):
        return

    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        scope = function_scope.get()
        if scope is None:
            return original(self, fn, *args, **kwargs)
        install_log_keys = log_keys.for_pool()  # the function's log keys, process-wide on Lambda (log_keys.py)

        def scoped() -> Any:
            function_scope.set(scope)
            install_log_keys()
            return fn(*args, **kwargs)

        return original(self, contextvars.Context().run, scoped)

    submit.carries_function_scope = True  # type: ignore[attr-defined]
    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


class FunctionRouter:
    """Function name or ARN or logical id -> the handler callable that template.yaml names."""

    def __init__(
        self,
        specs: dict[str, FunctionSpec],
        physical_names: dict[str, str],
        region: str,
        hidden: dict[str, frozenset[str]] | None = None,
    ) -> None:
        """`hidden`: by logical id, the variables of the process's environment the function does not have on AWS
        (another function's); its handler's `settings()` does not see them (efficy_sync.settings.function_scope)."""
        self._specs = specs
        self._hidden = hidden or {}
        self._region = region
        self._by_name = {name: lid for lid, name in physical_names.items()}
        self._by_name.update({lid: lid for lid in specs})
        self._physical = physical_names
        self._modules: dict[str, ModuleType] = {}
        self._lock = threading.Lock()
        self.invocations: dict[str, int] = {}

    def logical_id(self, name_or_arn: str) -> str:
        name = name_or_arn.split(":function:")[-1].split(":")[0]
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no function {name!r} in template.yaml") from None

    @contextmanager
    def scope(self, logical_id: str) -> Iterator[None]:
        """The function's own settings while its code runs (its module's import included, as on Lambda)."""
        from efficy_sync.settings import function_scope

        token = function_scope.set((logical_id, self._hidden.get(logical_id, frozenset())))
        try:
            yield
        finally:
            function_scope.reset(token)

    def handler(self, logical_id: str) -> Any:
        with self.scope(logical_id):
            return self._handler(logical_id)

    def _handler(self, logical_id: str) -> Any:
        spec = self._specs[logical_id]
        module_name, attr = spec.handler.rsplit(".", 1)
        with self._lock:
            module = self._modules.get(logical_id)
            if module is None:
                path = spec.code_dir / (module_name.replace(".", "/") + ".py")
                import_spec = importlib.util.spec_from_file_location(f"lambda_{logical_id}", path)
                if import_spec is None or import_spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(import_spec)
                import_spec.loader.exec_module(module)
                self._modules[logical_id] = module
        return getattr(module, attr)

    def warm(self) -> None:
        """Import every handler now, as warm Lambda containers have: a benchmark that times the steady state
        keeps the one-time imports out of its window (cold start is measured by bench/coldstart.py)."""
        for logical_id in self._specs:
            self.handler(logical_id)

    def invoke(self, name_or_arn: str, event: Any) -> Any:
        """Call the handler; exceptions propagate (the caller decides what a failure means)."""
        logical_id = self.logical_id(name_or_arn)
        self.invocations[logical_id] = self.invocations.get(logical_id, 0) + 1
        name = self._physical.get(logical_id, logical_id)
        context = LambdaContext(
            function_name=name,
            invoked_function_arn=f"arn:aws:lambda:{self._region}:123456789012:function:{name}",
            aws_request_id=str(uuid.uuid4()),
            timeout_seconds=self._specs[logical_id].timeout,  # template.yaml's: a page has 300 s, not 900
            _started=time.monotonic(),
        )
        with self.scope(logical_id), log_keys.fresh():
            return self._handler(logical_id)(event, context)

    # ---- Step Functions -> moto Lambda -> here ------------------------------------------------------
    def invoke_as_lambda(self, function_name: str, body: bytes | str | None, response_headers: dict[str, str]) -> bytes:
        """What Lambda's Invoke API answers: the result as JSON, or (an exception) a function-error document
        with `x-amz-function-error` set, whose errorType is the exception's class name (ASL Retry/Catch match it)."""
        payload = json.loads(body) if body else {}
        try:
            return json.dumps(self.invoke(function_name, payload), default=str).encode()
        except Exception as exc:
            log.warning("function %s raised %s: %s", function_name, type(exc).__name__, exc)
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {"errorType": type(exc).__name__, "errorMessage": str(exc), "trace": traceback.format_exc(limit=5)}
            ).encode()
