"""The README and the runbook stay true: each test reads a number or a name the docs state and checks it against
the code it describes (each of these sentences had gone stale: the per-integration metric count, the Tags
Lambda's timeout, where import files are split, the category a revoked key's failures are retried under)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
WORDS = {"six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def test_readme_counts_the_per_integration_metrics_the_code_publishes() -> None:
    from efficy_sync.observability import INTEGRATION_METRICS

    said = re.search(r"(\w+) of\s+them are also published per integration", README)
    assert said, "README no longer says how many metrics are published per integration"
    assert WORDS[said.group(1).lower()] == len(INTEGRATION_METRICS), (said.group(0), sorted(INTEGRATION_METRICS))
    per = re.search(r"(\d+) per integration, against", README)
    assert per and int(per.group(1)) == len(INTEGRATION_METRICS), per and per.group(0)


def test_readme_names_the_timeout_of_the_lambda_that_runs_the_tags_step() -> None:
    asl = json.loads((ROOT / "statemachines" / "full_sync.asl.json").read_text())
    assert asl["States"]["Tags"]["Parameters"]["FunctionName"] == "${FullSyncStepFunctionArn}"
    block = re.search(r"\n  FullSyncStepFunction:\n(.*?)\n  \w+:\n", (ROOT / "template.yaml").read_text(), re.S)
    assert block
    timeout = int(re.search(r"\n      Timeout: (\d+)", block.group(1)).group(1))  # type: ignore[union-attr]
    said = re.search(r"than one (\d+) s Lambda can tag", README)
    assert said and int(said.group(1)) == timeout, (said and said.group(0), timeout)


def test_readme_names_the_size_of_the_import_files_the_imports_step_sends() -> None:
    """The Imports step (collect.py) sends files of full_sync.import_rows persons (5,000 is the page path without
    a collector: tests, tools); the README said "files split at 5,000 rows"."""
    from efficy_sync.config.model import FullSyncSettings

    said = re.search(r"files of `full_sync.import_rows` persons, ([\d,]+) by default", README)
    assert said, "README no longer names the import file size"
    assert int(said.group(1).replace(",", "")) == FullSyncSettings().import_rows, said.group(0)


def test_runbook_retries_a_revoked_key_s_failures_under_a_category_health_records() -> None:
    """A 401/403 is about the integration: never recorded on the person (acknowledgeable False), it ends in the
    DLQ, and health lists it under dead_lettered; `--retry permission` would find nothing."""
    from efficy_sync.clients.errors import AuthError, acknowledgeable

    assert not acknowledgeable(AuthError("401 after a refresh", status=401))
    assert "--retry permission" not in RUNBOOK
    assert "--retry dead_lettered" in RUNBOOK
