"""Checks made when a config is validated or applied, not when a stored version is read back.

They refuse configs that load fine but would not do what they say: conditions no person can pass, a query
tag's cron the sweeper reads as something else, an automatic attribute under another case, a tag or condition
value with a control character (printed by `config show` in a form `config apply` refuses or reads as another
value). A stored version is read by the model alone (store/configs.py), so a version applied before one of these
checks existed still loads and syncs: refusing it there would stop the integration rather than protect it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from ..conditions import _as_boolean, _whole
from .model import IntegrationConfig, SyncCondition
from .names import RESERVED_ATTRIBUTES
from .problems import Problem

#: the cron forms fullsync/tags.schedule_due honours: once a day at a fixed minute and hour (UTC)
_DAILY_CRON = re.compile(r"^cron\(([0-5]?[0-9]) (1?[0-9]|2[0-3]) [*?] \* [*?] \*\)$")
#: characters a tag or a condition value must not hold: controls (C0, DEL, C1), line and paragraph separators
_UNSHOWABLE = ("Cc", "Zl", "Zp", "Cs", "Cn")
#: query tags per integration. Each travels through the full sync's state machine: the Tags step's answer (per
#: tag its counts, untags, held untags and an error of up to 300 characters) is every later step's input, and
#: the report Finish and HaltRun return holds it again. Step Functions refuses a state's data over 256 KiB
#: (States.DataLimitExceeded, which no Catch takes: FailRun never runs): with 128-character tag names that is
#: about 870 bytes a tag, so 300 such tags failed every run; 200 keep the report under 190 KB, and the run item
#: (DynamoDB, 400 KB) holds it beside the per-tag counters (tests/unit/test_step_payload_sizes.py)
MAX_QUERY_TAGS = 200


def entry_problems(cfg: IntegrationConfig) -> list[Problem]:
    """Every problem of these checks, each at its path."""
    return [*_conditions(cfg), *_schedules(cfg), *_attributes(cfg), *_characters(cfg), *_query_count(cfg)]


def _query_count(cfg: IntegrationConfig) -> Iterator[Problem]:
    if len(cfg.tags.queries) > MAX_QUERY_TAGS:
        yield Problem(
            "tags.queries",
            f"found {len(cfg.tags.queries)} query tags; allowed: at most {MAX_QUERY_TAGS} (a full sync carries every "
            "query tag's counts between its steps, and Step Functions refuses more than 256 KiB of them)",
        )


def _conditions(cfg: IntegrationConfig) -> Iterator[Problem]:
    """Conditions on one field that no value passes together: nobody is ever synced, and with `on_condition_lost`
    delete or untag everyone in APSIS One becomes a removal (the breaker holds them; --allow-removals would not)."""
    seen: dict[str, list[tuple[int, SyncCondition]]] = {}
    for i, condition in enumerate(cfg.sync_conditions):
        for j, earlier in seen.get(condition.field, []):
            if _exclusive(earlier, condition):
                yield Problem(
                    f"sync_conditions[{i}]",
                    f"no value of {condition.field} passes both this and sync_conditions[{j}]: nobody would be "
                    "synced; remove or correct one of them",
                )
        seen.setdefault(condition.field, []).append((i, condition))


def _allowed(condition: SyncCondition) -> tuple[set[str] | None, set[str], bool | None]:
    """(the values it allows, or None for any; the values it refuses; True: must be empty, False: must not)."""
    if condition.equals is not None:
        return {_key(condition.equals)}, set(), None
    if condition.in_ is not None:
        return {_key(v) for v in condition.in_}, set(), None
    if condition.not_equals is not None:
        return None, {_key(condition.not_equals)}, None
    return None, set(), bool(condition.is_empty)


def _key(value: str) -> str:
    """A value as a condition compares it (conditions._same): a yes/no value in any spelling is one, and so is a
    whole number with or without a zero fraction ("3", "3.0", "3,00"). Compared as written, `equals "3"` with
    `not_equals "3.0"` (nobody passes) was let through, and `equals "3"` with `equals "3.0"` refused."""
    flag = _as_boolean(value)
    if flag is not None:
        return f"bool:{flag}"
    number = _whole(value)
    return f"int:{number}" if number is not None else value


def _exclusive(a: SyncCondition, b: SyncCondition) -> bool:
    (only_a, not_a, empty_a), (only_b, not_b, empty_b) = _allowed(a), _allowed(b)
    if empty_a is not None and empty_b is not None:
        return empty_a != empty_b
    empty = empty_a if empty_a is not None else empty_b
    values = [v for v in (only_a, only_b) if v is not None]
    if empty is True and values:
        return True  # an empty field equals no configured value
    if len(values) == 2 and not values[0] & values[1]:
        return True
    allowed = values[0] & values[1] if len(values) == 2 else (values[0] if values else None)
    return allowed is not None and not allowed - not_a - not_b


def _schedules(cfg: IntegrationConfig) -> Iterator[Problem]:
    for i, query in enumerate(cfg.tags.queries):
        if query.schedule and query.schedule.startswith("cron(") and not _DAILY_CRON.match(query.schedule):
            yield Problem(
                f"tags.queries[{i}].schedule",
                f"found {query.schedule!r}; allowed: rate(N minutes|hours|days), or a daily cron(M H * * ? *) "
                "(the sweeper runs a cron schedule once a day at its minute and hour, UTC)",
            )


def _attributes(cfg: IntegrationConfig) -> Iterator[Problem]:
    reserved = {name.lower() for name in RESERVED_ATTRIBUTES}
    for i, mapping in enumerate(cfg.field_mappings):
        if mapping.apsis.lower() in reserved:
            yield Problem(
                f"field_mappings[{i}].apsis",
                f"found {mapping.apsis!r}; allowed: any attribute except {' and '.join(RESERVED_ATTRIBUTES)} in any "
                "case (they are mapped automatically; remove this mapping)",
            )


def _characters(cfg: IntegrationConfig) -> Iterator[Problem]:
    values: list[tuple[str, str]] = []
    for kind in ("profiles", "queries"):
        values += [(f"tags.{kind}[{i}].tag", t.tag) for i, t in enumerate(getattr(cfg.tags, kind))]
    for i, c in enumerate(cfg.sync_conditions):
        values += [(f"sync_conditions[{i}]", v) for v in (c.equals, c.not_equals, *(c.in_ or [])) if v is not None]
    for path, value in values:
        if any(unicodedata.category(ch) in _UNSHOWABLE for ch in value):
            yield Problem(path, f"found {value!r}; allowed: text without control or line-separator characters")
