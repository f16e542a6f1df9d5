"""The local stack as a user starts and uses it (README: `efficy-sync local up --ready-file F`), for the tests
that run every command as a subprocess with ONLY the environment the README gives (tests/e2e/test_as_documented.py,
tests/e2e/test_run_history_and_registration.py).

The stack is started once per test worker (`user` in tests/conftest.py, session-scoped): each test works on
persons and integrations of its own, so neither the order of the tests nor the module they are in matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import requests
import yaml

from tests.support import launch_stack, stop_process

BIN = Path(sys.executable).parent
#: where the code under test is, when the tests run on a checkout other than the one installed in the venv
#: (PYTHONPATH set for pytest): how the product is installed, not a setting of the user's shell
CODE = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


class UserStack:
    """The local stack as a user sees it: the ready file, and a shell with the README's environment only."""

    def __init__(self, ready_file: Path, ready: dict[str, Any], process: subprocess.Popen, home: Path) -> None:
        self.ready_file = ready_file
        self.ready = ready
        self.process = process
        self.home = home
        self.log_path = home / "stack.log"  # tests/conftest.py fails a test on an IAM refusal logged here
        self.http = requests.Session()

    def env(self) -> dict[str, str]:
        """README, "Quick start": AWS_ENDPOINT_URL=<aws_endpoint> AWS_REGION=<region>, dummy credentials."""
        return {
            "PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(self.home),
            "AWS_ENDPOINT_URL": self.ready["aws_endpoint"],
            "AWS_REGION": self.ready["region"],
            "AWS_ACCESS_KEY_ID": "dummy",
            "AWS_SECRET_ACCESS_KEY": "dummy",
            **CODE,
        }

    def cli(self, *args: str, expect: int | None = 0, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["efficy-sync", *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if expect is not None and result.returncode != expect:
            raise AssertionError(
                f"efficy-sync {' '.join(args)} exited {result.returncode}, not {expect}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def json(self, *args: str, expect: int | None = 0) -> Any:
        return json.loads(self.cli(*args, "--output", "json", expect=expect).stdout)

    def aws(self, service: str) -> Any:
        """What `aws <service> ...` would use in the same shell: the endpoint, region and credentials only."""
        env = self.env()
        return boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        ).client(service, endpoint_url=env["AWS_ENDPOINT_URL"])

    def outputs(self) -> dict[str, str]:
        stack = self.aws("cloudformation").describe_stacks(StackName="efficy-sync")["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def profile(self, key: int) -> dict[str, Any] | None:
        r = self.http.get(f"{self.ready['apsis_url']}/_sim/profiles/com.apsis1.keyspaces.crm-id/{key}", timeout=10)
        return r.json() if r.status_code == 200 else None

    def own_integration(self, workdir: Path, **changes: Any) -> str:
        """README: a config of one's own may reuse the demo's secrets (the same simulators)."""
        shown = yaml.safe_load(self.cli("config", "show", "demo").stdout)
        integration_id = f"doc-{uuid.uuid4().hex[:8]}"
        shown.update(integration_id=integration_id, **changes)
        path = workdir / f"{integration_id}.yaml"
        path.write_text(yaml.safe_dump(shown, sort_keys=False))
        self.cli("config", "apply", str(path))
        return integration_id

    def stop(self) -> None:
        stop_process(self.process)


def start_user_stack(home: Path, timeout: float = 120.0) -> UserStack:
    """README: `.venv/bin/efficy-sync local up --ready-file .ready.json`, kept running."""
    ready_file = home / ".ready.json"
    stack_env = {
        "PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONWARNINGS": "ignore",
        **CODE,
    }
    argv = ["efficy-sync", "local", "up", "--quiet", "--ready-file", str(ready_file)]
    process = launch_stack(argv, stack_env, ready_file, home / "stack.log", timeout)
    return UserStack(ready_file, json.loads(ready_file.read_text()), process, home)


def seed(user: UserStack, n: int, *flags: str) -> tuple[int, int]:
    """README: `efficy-sync local seed N`; returns the first and last key created."""
    created = user.json("local", "seed", str(n), "--ready-file", str(user.ready_file), *flags)
    assert created["created"] == n
    return created["first_key"], created["last_key"]
