"""The config package keeps its old import surface, and a Lambda's cold path loads only the model part of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.coldstart import FUNCTIONS, _env

HANDLERS = sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))

#: what a handler may load of the config package: the model and what it validates with (no YAML, no diffs)
COLD_PATH = {"efficy_sync.config", "efficy_sync.config.model", "efficy_sync.config.names"}
COLD_PATH |= {"efficy_sync.config.problems", "efficy_sync.config.checks", "efficy_sync.config.base"}
COLD_PATH |= {"efficy_sync.config.efficy"}

_PROBE = """
import importlib.util, json, sys
seen = {}
for name, path in json.loads(sys.argv[1]).items():
    sys.path.insert(0, path.rsplit("/", 1)[0])
    spec = importlib.util.spec_from_file_location(f"handler_{name}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    sys.path.pop(0)
    loaded = sorted(m for m in sys.modules if m == "efficy_sync.config" or m.startswith("efficy_sync.config."))
    seen[name] = loaded + (["yaml"] if "yaml" in sys.modules else [])
print(json.dumps(seen))
"""


def test_handlers_load_only_the_config_model() -> None:
    """All handlers in one fresh interpreter (one start-up instead of one each), in turn, as Lambda lays them
    out; what each has loaded so far is recorded after its import."""
    import json

    handlers = {name: str(FUNCTIONS / name / "app.py") for name in HANDLERS}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(handlers)],
        env=_env(None),
        cwd=FUNCTIONS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    assert set(seen) == set(HANDLERS)
    for name, loaded in seen.items():
        assert "yaml" not in loaded, f"{name} imports yaml on its cold path"
        assert set(loaded) <= COLD_PATH, f"{name} loads {sorted(set(loaded) - COLD_PATH)} on its cold path"
    assert "efficy_sync.config.model" in seen[HANDLERS[-1]], "the probe did not see the config package load"


def test_every_old_name_is_still_exported() -> None:
    import efficy_sync.config as config

    for name in config.__all__:
        assert getattr(config, name) is not None, name
    # a function named like a submodule must stay the function once its module is loaded
    assert callable(config.references) and callable(config.check_references)
    with pytest.raises(AttributeError):
        _ = config.no_such_name
