"""Sync conditions: which persons an integration syncs at all.

Every condition is evaluated (not just up to the first failure) so `explain` can show the whole picture; the
reasons quote the person's value, masked when the field holds personal data, because they end up in reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from efficy_sync.config import SyncCondition
from efficy_sync.pii import mask_value
from efficy_sync.values import as_text, bool_word, is_empty_value


@dataclass(frozen=True)
class ConditionOutcome:
    """One condition judged for one person. What reports show (`actual`, `reason`) is worked out when asked
    for: a full sync judges every person and reads a reason only for the few who fail (a quarter of a page's
    CPU went into formatting and masking reasons nobody read)."""

    condition: SyncCondition
    passed: bool
    present: bool  # the person's data has the field
    value: Any
    #: the condition tests a yes/no field and the value is no spelling of yes or no ("x", "Ja"): it fails, but
    #: is no evidence the person stopped matching (sync.py leaves an existing profile as it is)
    unreadable: bool = False

    @cached_property
    def actual(self) -> str:
        """The person's value as shown in reports (masked when personal)."""
        return "" if self.value is None else str(mask_value(self.condition.field, as_text(self.value)))

    @cached_property
    def reason(self) -> str:
        if not self.present:
            seen = "the field is missing from the person's data"
        elif is_empty_value(self.value):
            seen = "value is empty"
        elif self.unreadable:
            seen = f"value {self.actual!r} is not a yes/no value"
        else:
            seen = f"value is {self.actual!r}"
        return f"{self.condition.describe()} {'passed' if self.passed else 'failed'}: {seen}"


@dataclass(frozen=True)
class ConditionReport:
    outcomes: tuple[ConditionOutcome, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def first_failure(self) -> ConditionOutcome | None:
        return next((o for o in self.outcomes if not o.passed), None)

    @property
    def unreadable(self) -> bool:
        """A condition failed only because a yes/no value could not be read: not created, not withdrawn."""
        return any(o.unreadable for o in self.outcomes) and all(o.passed or o.unreadable for o in self.outcomes)


#: configured values that test a yes/no field; the person's value matches them as a boolean too
_BOOLEAN_TESTS = {"1": True, "0": False, "true": True, "false": False}


def _same(text: str, configured: str | None) -> bool:
    """The person's value is the configured one: as written, or, when the condition tests a yes/no field ("1",
    "0", "true", "false"), as the same boolean in another spelling. Efficy's JSON-RPC writes checkboxes as "1"
    and "0", but its connector's REST export may write true/"True"/"yes" (contracts/efficy.md: record shapes
    assumed): compared as text, a Robinson-listed person would pass ROBINSON not_equals "1" and be created."""
    if configured is None:
        return False
    if text == configured:
        return True
    number = _whole(configured)
    if number is not None and _whole(text) == number:
        return True
    wanted = _BOOLEAN_TESTS.get(configured.strip().lower())
    return wanted is not None and _as_boolean(text) is wanted


#: a whole number, optionally with a zero fraction after a point or a comma ("3", "3.0", "3,00"); no leading zero
#: (a code such as "03" is another value than "3") and no three-digit group ("1.000" may be a thousand)
_WHOLE_TEXT = re.compile(r"^([+-]?(?:0|[1-9][0-9]*))(?:[.,](?!0{3}$)0+)?$")


def _whole(text: str) -> int | None:
    """The number a whole-number text spells: "3.0" and "3,0" are 3, as a JSON 3.0 already reads (values.as_text).
    Efficy's JSON-RPC writes numbers as text, a float column or a decimal-comma locale with a fraction: compared
    as text, `STATUS not_equals "3"` let a person whose STATUS read "3.0" through (created), and `equals "5"`
    failed on "5.0", which on_condition_lost turned into a delete."""
    match = _WHOLE_TEXT.match(text.strip())
    return int(match.group(1)) if match else None


def _as_boolean(text: str) -> bool | None:
    """A yes/no value in any spelling: the words of values.bool_word, or the number 1 or 0 ("1.0", "01")."""
    word = bool_word(text)
    if word is not None:
        return word
    try:
        number = float(text)
    except ValueError:
        return None
    return True if number == 1 else False if number == 0 else None


def _unreadable_flag(text: str, configured: Any) -> bool:
    """True when the condition tests a yes/no field and the person's value is neither empty nor any spelling of
    yes or no ("x", "Ja", "-1"). `not_equals "1"` (a Robinson list) must not let such a person through on a
    guess: a person is created in APSIS One only on a value that says they may be."""
    if configured is None or str(configured).strip().lower() not in _BOOLEAN_TESTS or text == str(configured):
        return False
    return not is_empty_value(text) and _as_boolean(text) is None


def _holds(condition: SyncCondition, value: Any) -> bool:
    operator = condition.operator
    if operator == "is_empty":
        return is_empty_value(value)
    if operator == "not_empty":
        return not is_empty_value(value)
    if value is None or isinstance(value, dict | list):
        # a null (or a lookup object or list) says nothing: it passes no test of a value, not_equals included
        # (a null Robinson flag let the person be created); _unreadable makes it a Skip, never a removal
        return False
    text = as_text(value)
    if operator == "equals":
        return _same(text, condition.equals)
    if operator == "not_equals":
        return not _same(text, condition.not_equals) and not _unreadable_flag(text, condition.not_equals)
    return any(_same(text, wanted) for wanted in condition.in_ or [])


def _unreadable(condition: SyncCondition, value: Any) -> bool:
    if condition.operator in ("is_empty", "not_empty"):
        return False
    if value is None or isinstance(value, dict | list):
        # a null where a value is tested (JSON's "not given"), or a lookup object or list whose text is no
        # value the config can name: no evidence the person stopped matching, so nobody is untagged or deleted
        # on it, and nobody is created on it either (a Skip all the same)
        return True
    text = as_text(value)
    tested = [condition.equals, condition.not_equals, *(condition.in_ or [])]
    return any(_unreadable_flag(text, wanted) for wanted in tested if wanted is not None)


def evaluate_one(condition: SyncCondition, person: Mapping[str, Any]) -> ConditionOutcome:
    value = person.get(condition.field)
    passed = _holds(condition, value)
    unreadable = not passed and _unreadable(condition, value)
    return ConditionOutcome(condition, passed, condition.field in person, value, unreadable)


def evaluate(conditions: Sequence[SyncCondition], person: Mapping[str, Any]) -> ConditionReport:
    """All conditions must hold; an empty list lets everyone through."""
    return ConditionReport(tuple(evaluate_one(c, person) for c in conditions))
