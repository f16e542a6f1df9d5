"""Step Functions refuses a state's input or output, and a Lambda task's result, over 256 KiB
(States.DataLimitExceeded). No Catch takes that error (States.ALL does not match it), so the run never reaches
FailRun; moto's interpreter does not enforce the limit at all. The Tags step's answer is every later step's
input, and Finish and HaltRun return a report holding it again: both grow with the number of query tags. This
builds them for the most query tags a config may hold, with the longest tag names, every query answering no
members (its untags held, with an error line: what lost query rights do to every query at once) and the
most failed pages a report lists, and checks them against the limit."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from efficy_sync.config import IntegrationConfig, config_from_dict
from efficy_sync.config.entry_checks import MAX_QUERY_TAGS
from efficy_sync.config.problems import ConfigError
from efficy_sync.fullsync.report import build_report
from efficy_sync.fullsync.tags import mirror_query_tags

from tests.unit.test_explain import CFG

#: Step Functions' payload quota (state input/output, task result)
LIMIT = 256 * 1024
#: room left for what the built data understates: 7-digit counts instead of these, the run object, Seams,
#: Imports and release answers beside the Tags answer in the state data
HEADROOM = 40 * 1024


def _config(queries: int, *, entry: bool = False) -> Any:
    data = json.loads(json.dumps(CFG.model_dump(mode="json", exclude_none=True)))
    data["tags"]["queries"] = [
        {"query": 100_000 + i, "tag": f"q{i:04d}-{'t' * 128}"[:128], "schedule": "rate(1 day)"} for i in range(queries)
    ]
    if entry:  # as `config validate` and `config apply` read it
        return config_from_dict(data)
    return IntegrationConfig.model_validate(data)  # as a stored version is read back (it still loads)


class _States:
    def get_many(self, integration_id: str, keys: list[int]) -> dict[int, Any]:
        return {k: SimpleNamespace(exists_in_apsis=True, tags=_Everything(), tags_unknown=()) for k in keys}


class _Everything(dict):  # type: ignore[type-arg]
    def get(self, key: Any, default: Any = None) -> Any:
        return True


class _Members:
    def previous(self, integration_id: str, query: int, tag: str) -> set[int]:
        return set(range(1_000_000, 1_000_010))


def _tags_answer(cfg: Any) -> dict[str, Any]:
    return mirror_query_tags(
        cfg,
        run_query=lambda query: [],
        apsis=None,
        states=_States(),  # type: ignore[arg-type]
        members=_Members(),  # type: ignore[arg-type]
        dry_run=True,
        run_id="run",
    )


def _report(cfg: Any, tags: dict[str, Any]) -> dict[str, Any]:
    counters = {f"{sign}:{q.tag}": 123_456 for q in cfg.tags.queries for sign in ("tag+", "tag-")}
    run = SimpleNamespace(
        integration_id=cfg.integration_id,
        run_id="0" * 36,
        dry_run=False,
        write_mode="diff",
        config_version=99,
        started_by="s" * 64,
        started_via="cli",
        started_at="2025-01-01T00:00:00+00:00",
        ended_at=None,
        pages_total=1_000_000,
        counters=counters,
    )
    failed = [{"page": i, "attempts": 6, "error": f"E{i % 30}: {'x' * 1000}"} for i in range(2_000)]
    return build_report(run, status="halted", failed_pages=failed, query_tags=tags, ended_at="2025-01-02T00:00:00Z")


def _size(data: Any) -> int:
    return len(json.dumps(data).encode())


def test_the_tags_answer_and_the_report_fit_step_functions_payload_quota_at_the_most_query_tags() -> None:
    cfg = _config(MAX_QUERY_TAGS)
    tags = _tags_answer(cfg)
    assert len(tags["errors"]) == len(tags["held"]) == MAX_QUERY_TAGS  # every query's untags held, with a line
    report = _report(cfg, tags)
    assert len(report["tags"]) == MAX_QUERY_TAGS
    assert _size(tags) + HEADROOM < LIMIT
    assert _size(report) + HEADROOM < LIMIT


def test_half_again_as_many_query_tags_would_pass_the_quota() -> None:
    """Why the config stops at MAX_QUERY_TAGS: 300 such tags made a report Finish could not return."""
    cfg = _config(MAX_QUERY_TAGS * 3 // 2)
    assert _size(_report(cfg, _tags_answer(cfg))) > LIMIT


def test_a_config_with_more_query_tags_is_refused() -> None:
    _config(MAX_QUERY_TAGS, entry=True)
    with pytest.raises(ConfigError, match=f"at most {MAX_QUERY_TAGS}"):
        _config(MAX_QUERY_TAGS + 1, entry=True)
