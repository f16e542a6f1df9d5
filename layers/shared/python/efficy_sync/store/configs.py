"""Integration configs in DynamoDB, with every applied version kept (who applied it, and when).

Items: pk="CONFIG#<id>", sk="CURRENT" points at the live version; sk="V#<000042>" holds each version.
Both are written in one transaction guarded on the version the admin's change was based on (`put`'s
`expected_version`: the one `config apply` read and showed the diff against), so two admins applying at once
cannot silently overwrite each other: the later one gets ConfigConflict, naming the version applied meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from ..aws import client
from ..config import ConfigError, IntegrationConfig, Problem
from .dynamo import from_item, key, query_all, scan_all, to_item

#: a version's body, at most: DynamoDB refuses an item over 400 KB, and the item also holds who applied it, when,
#: and the comment
MAX_BODY_BYTES = 360_000


def stored_body(cfg: IntegrationConfig) -> str:
    """What a version stores: only what the admin set (a default is not written down, so a Lambda of an older
    version than the CLI that applied the config still loads it), and a value set on purpose is kept as set."""
    return json.dumps(cfg.model_dump(mode="json", exclude_none=True, exclude_unset=True), sort_keys=True)


def too_large(cfg: IntegrationConfig) -> str | None:
    """Why the config cannot be stored (`config validate` says it before `config apply` tries), or None."""
    size = len(stored_body(cfg).encode())
    if size <= MAX_BODY_BYTES:
        return None
    return f"the config is {size // 1000:,} KB stored; a version holds at most {MAX_BODY_BYTES // 1000} KB"


class ConfigConflict(Exception):
    """Another version was applied since the one the change was based on: review it, and apply again.
    `applied`: the version live now, and who applied it when (None: the live item could not be read again)."""

    def __init__(self, integration_id: str, expected: int, applied: dict[str, Any] | None) -> None:
        self.integration_id, self.expected, self.applied = integration_id, expected, applied
        based = f"this change was based on version {expected}" if expected else "this change was for a new integration"
        if applied is None or int(applied.get("version", 0)) == expected:  # a concurrent apply that failed too
            what = "another version was being applied at the same time"
        else:
            what = (
                f"version {applied['version']} was applied meanwhile by {applied.get('applied_by') or 'unknown'} "
                f"at {applied.get('applied_at') or '?'}"
            )
        super().__init__(f"{integration_id}: {what} ({based})")


class UnknownIntegration(KeyError):
    pass


class UnreadableConfig(ConfigError):
    """A stored version this code cannot load: applied by a newer efficy-sync with a setting this one does not
    know (stored_body keeps only what was set, so a newer setting left at its default still loads), or a body
    that no longer validates. A ConfigError, with every problem, naming the integration and the version."""

    def __init__(self, integration_id: str, version: int | None, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.integration_id, self.version = integration_id, version
        which = f"version {version}" if version is not None else "(its live version)"
        listed = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (
            f"{integration_id} {which} cannot be read by this efficy-sync (applied by a newer one?):\n{listed}",
        )


def parse_stored(integration_id: str, version: int | None, body: str) -> IntegrationConfig:
    """A stored body as a config; UnreadableConfig (never pydantic's ValidationError) when it does not load."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UnreadableConfig(integration_id, version, [Problem("(body)", f"not JSON: {exc}")]) from None
    try:
        return IntegrationConfig.model_validate(data)
    except ValidationError as exc:
        if not isinstance(data, dict):
            problems = [Problem("(root)", f"found {type(data).__name__}; allowed: a mapping")]
        else:
            from ..config.loading import refused_problems  # only on this rare path: not on a cold start

            problems = refused_problems(data, exc)
        raise UnreadableConfig(integration_id, version, problems) from None


class ConfigStore:
    """`cache_seconds`: how long a read config is served without asking DynamoDB. `check_version`: ask every
    time, but only for the live version number (a projected read): the config is parsed again only when it
    changed. A worker that decides who is created or opted in must see an applied version at once: with a
    minute's cache, persons a new sync condition excluded were still created for that minute."""

    def __init__(self, table_name: str, *, cache_seconds: float = 0.0, check_version: bool = False) -> None:
        self._table = table_name
        self._cache: dict[str, tuple[float, IntegrationConfig, int]] = {}
        self._cache_seconds = cache_seconds
        self._check_version = check_version

    @staticmethod
    def _pk(integration_id: str) -> str:
        return f"CONFIG#{integration_id}"

    def current(self, integration_id: str) -> tuple[IntegrationConfig, int]:
        """The live config and its version; cached briefly because every webhook and batch reads it."""
        hit = self._cache.get(integration_id)
        if hit and self._check_version:
            if self._live_version(integration_id) == hit[2]:
                return hit[1], hit[2]
        elif hit and time.monotonic() - hit[0] < self._cache_seconds:
            return hit[1], hit[2]
        item = from_item(
            client("dynamodb")
            .get_item(TableName=self._table, Key=key(self._pk(integration_id), "CURRENT"), ConsistentRead=True)
            .get("Item", {})
        )
        if not item:
            raise UnknownIntegration(integration_id)
        version = int(item["version"])
        cfg = parse_stored(integration_id, version, item["body"])
        self._cache[integration_id] = (time.monotonic(), cfg, version)
        return cfg, version

    def _live(self, integration_id: str) -> dict[str, Any] | None:
        """The live version's number, who applied it and when, without its body (None: none)."""
        item = (
            client("dynamodb")
            .get_item(
                TableName=self._table,
                Key=key(self._pk(integration_id), "CURRENT"),
                ConsistentRead=True,
                ProjectionExpression="#v, applied_by, applied_at",
                ExpressionAttributeNames={"#v": "version"},
            )
            .get("Item")
        )
        return from_item(item) if item else None

    def _live_version(self, integration_id: str) -> int | None:
        live = self._live(integration_id)
        return int(live["version"]) if live and live.get("version") is not None else None

    def get(self, integration_id: str) -> IntegrationConfig:
        return self.current(integration_id)[0]

    def put(
        self, cfg: IntegrationConfig, *, applied_by: str, comment: str = "", expected_version: int | None = None
    ) -> int:
        """Store `cfg` as a new version and make it current. Returns the new version number.

        `expected_version`: the version the change was based on (0: none, a new integration); when another is
        live by the time it is stored, nothing is stored and ConfigConflict names it. None (the local stack, the
        demo, tests): on top of whatever version is live."""
        # None: the live number only, so a live version this code cannot read is replaced all the same
        previous = (self._live_version(cfg.integration_id) or 0) if expected_version is None else expected_version
        version = previous + 1
        body = stored_body(cfg)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        attrs = to_item(
            {"body": body, "version": version, "applied_at": now, "applied_by": applied_by, "comment": comment}
        )
        pk = self._pk(cfg.integration_id)
        condition = "attribute_not_exists(pk)" if previous == 0 else "version = :prev"
        current: dict[str, Any] = {
            "Put": {
                "TableName": self._table,
                "Item": {**key(pk, "CURRENT"), **attrs},
                "ConditionExpression": condition,
            }
        }
        if previous:
            current["Put"]["ExpressionAttributeValues"] = to_item({":prev": previous})
        history = {
            "Put": {
                "TableName": self._table,
                "Item": {**key(pk, f"V#{version:06d}"), **attrs},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        ddb = client("dynamodb")
        try:
            ddb.transact_write_items(TransactItems=[current, history])
        except ddb.exceptions.TransactionCanceledException as exc:
            raise ConfigConflict(cfg.integration_id, previous, self._live_entry(cfg.integration_id)) from exc
        self._cache.pop(cfg.integration_id, None)
        return version

    def _live_entry(self, integration_id: str) -> dict[str, Any] | None:
        """`_live`, or None when it cannot be read: only the message of a conflict depends on it."""
        try:
            return self._live(integration_id)
        except Exception:
            return None

    def history(self, integration_id: str) -> list[dict[str, Any]]:
        """Every applied version, oldest first, without bodies."""
        items = query_all(
            self._table, "pk = :pk AND begins_with(sk, :v)", {":pk": self._pk(integration_id), ":v": "V#"}
        )
        return [
            {
                "version": int(item["version"]),
                "applied_at": item["applied_at"],
                "applied_by": item["applied_by"],
                "comment": item.get("comment", ""),
            }
            for item in items
        ]

    def version(self, integration_id: str, version: int) -> IntegrationConfig:
        item = from_item(
            client("dynamodb")
            .get_item(TableName=self._table, Key=key(self._pk(integration_id), f"V#{version:06d}"))
            .get("Item", {})
        )
        if not item:
            raise UnknownIntegration(f"{integration_id} v{version}")
        return parse_stored(integration_id, version, item["body"])

    def scheduled(self) -> dict[str, Callable[[], IntegrationConfig]]:
        """The live configs that have a query tag with a schedule of its own, read in one Scan (the sweeper
        runs every few minutes, and a GetItem per integration would make each sweep grow with the account).
        Each is validated when called, so that one config that no longer loads fails alone."""
        items = scan_all(self._table, "sk = :c", {":c": "CURRENT"}, projection="pk, body, version")
        found: dict[str, Callable[[], IntegrationConfig]] = {}
        for item in items:
            integration_id = str(item["pk"]).split("#", 1)[1]
            version = int(item["version"]) if "version" in item else None
            load = partial(parse_stored, integration_id, version, item["body"])
            try:
                body = json.loads(item["body"])
            except ValueError:  # unreadable: reported under its id (UnreadableConfig), the others still run
                found[integration_id] = load
                continue
            tags = body.get("tags") if isinstance(body, dict) else None
            queries = (tags.get("queries") if isinstance(tags, dict) else None) or []
            if any(isinstance(q, dict) and q.get("schedule") for q in queries):  # most have none: not validated
                found[integration_id] = load
        return dict(sorted(found.items()))

    def list_ids(self) -> list[str]:
        items = scan_all(self._table, "sk = :c", {":c": "CURRENT"}, projection="pk")
        return sorted(str(item["pk"]).split("#", 1)[1] for item in items)
