"""How a config problem is reported: where, what was found, what is allowed; every problem at once."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where, what was found, what is allowed."""

    path: str
    message: str
    found: str | None = None
    allowed: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path}: {self.message}{where}"


class ConfigError(Exception):
    """Raised with every problem found, so a user fixes a file in one pass instead of one error per run."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the integration config:\n{lines}")


def _show(value: Any) -> str:
    """How a found value is quoted in a message: YAML-like, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:77] + "..."
        return repr(text)
    if isinstance(value, int | float):
        return str(value)
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(path: str, found: Any, allowed: str) -> Problem:
    shown = _show(found)
    return Problem(path, f"found {shown}; allowed: {allowed}", found=shown, allowed=allowed)


def _reject(found: Any, allowed: str) -> NoReturn:
    """Raised from validators; the formatter turns it into 'found X; allowed: Y'."""
    raise PydanticCustomError(
        "config_value", "found {found}; allowed: {allowed}", {"found": _show(found), "allowed": allowed}
    )


def _check_pattern(value: Any, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        _reject(value, allowed)
    return value
