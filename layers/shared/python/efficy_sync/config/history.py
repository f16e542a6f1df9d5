"""Changes between two versions of a config, one readable line each, for `config apply`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import IntegrationConfig, config_to_dict
from .problems import _show


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            _flatten(child, f"{path}.{key}" if path else str(key), out)
    else:
        out[path] = value


def _render(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return _show(value)


def diff_configs(old: IntegrationConfig | None, new: IntegrationConfig) -> list[str]:
    """Human-readable changes from `old` to `new`, one line each, for `config apply`."""
    if old is None:
        return [f"new integration {new.integration_id!r}"]
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(config_to_dict(old), "", before)
    _flatten(config_to_dict(new), "", after)
    changes: list[str] = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        if isinstance(a, list) or isinstance(b, list):
            changes += _diff_list(path, a or [], b or [])
        elif path not in before:
            changes.append(f"{path}: set to {_render(b)}")
        elif path not in after:
            changes.append(f"{path}: removed (was {_render(a)})")
        else:
            changes.append(f"{path}: {_render(a)} -> {_render(b)}")
    return changes


def _diff_list(path: str, old: list[Any], new: list[Any]) -> list[str]:
    old_r, new_r = [_render(x) for x in old], [_render(x) for x in new]
    removed = [r for r in old_r if r not in new_r]
    added = [r for r in new_r if r not in old_r]
    lines = [f"{path}: removed {r}" for r in removed] + [f"{path}: added {r}" for r in added]
    if not lines and old_r != new_r:
        lines.append(f"{path}: reordered")
    return lines
