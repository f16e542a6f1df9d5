"""The config package keeps its old import surface, and a Lambda's cold path loads only the model part of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.coldstart import FUNCTIONS, _env

HANDLERS = sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))

#: what a handler may load of the config package: the model and what it validates with (no YAML, no diffs)
COLD_PATH = {"efficy_sync.config", "efficy_sync.config.model", "efficy_sync.config.names"}
COLD_PATH |= {"efficy_sync.config.problems", "efficy_sync.config.checks"}

_PROBE = """
import sys
import app
print(" ".join(sorted(m for m in sys.modules if m == "efficy_sync.config" or m.startswith("efficy_sync.config."))))
print("YAML" if "yaml" in sys.modules else "-")
"""


@pytest.mark.parametrize("name", HANDLERS)
def test_handler_loads_only_the_config_model(name: str) -> None:
    function_dir = FUNCTIONS / name
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=_env(function_dir),
        cwd=function_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules, yaml_flag = result.stdout.split("\n")[:2]
    loaded = set(modules.split())
    assert loaded <= COLD_PATH, f"{name} loads {sorted(loaded - COLD_PATH)} on its cold path"
    assert yaml_flag == "-", f"{name} imports yaml on its cold path"


def test_every_old_name_is_still_exported() -> None:
    import efficy_sync.config as config

    for name in config.__all__:
        assert getattr(config, name) is not None, name
    # a function named like a submodule must stay the function once its module is loaded
    assert callable(config.references) and callable(config.check_references)
    with pytest.raises(AttributeError):
        _ = config.no_such_name
