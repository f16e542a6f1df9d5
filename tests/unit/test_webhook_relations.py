"""Records of a relation table (efficy.relation_tables): whether Efficy announces a change of a person's CRM
profiles on the contact's record or on a relation table is not documented (contracts/efficy.md §5, §7). If the
latter, ignoring those records left an opt-out made in Efficy (the person taken out of the newsletter profile)
out of APSIS One until the next full sync. A configured relation table's record becomes an update of the
contact it names (read again by the worker), never a deletion; one naming no contact is counted and logged."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from efficy_sync.changes import ContactChange
from efficy_sync.config import ConfigError, IntegrationConfig, RelationTable, config_from_dict
from efficy_sync.ingest import AcceptResult, accept, split_by_person
from efficy_sync.webhook import parse
from efficy_sync.webhook_auth import sign

from tests.unit.consent_configs import consent_config
from tests.unit.test_webhook_tolerance import counted, log, queued  # noqa: F401

SECRET = "fake-webhook-secret"
DATE = "2026-01-01T10:00:00Z"
PROF_TABLE = 11123
RULE = RelationTable(table=PROF_TABLE, key_part="first")


def body(*records: dict[str, Any]) -> bytes:
    return json.dumps({"database": "crm", "records": list(records)}).encode()


def joined(contact: Any, profile: int = 12) -> dict[str, Any]:
    fields = {"K_CONTACT": contact, "K_PROFILE": profile}
    return {"table": PROF_TABLE, "key": f"{contact}_{profile}", "operation": "Create", "fields": fields, "date": DATE}


def left(key: Any) -> dict[str, Any]:
    return {"table": PROF_TABLE, "key": key, "operation": "Delete", "fields": None, "date": DATE}


def test_without_the_setting_a_relation_record_is_ignored_and_its_table_named() -> None:
    payload = parse(body(joined(5), left("6_12")))
    assert payload.records == [] and payload.ignored_tables == {PROF_TABLE: 2}
    assert parse(body({"table": PROF_TABLE, "key": 7})).ignored_tables == {PROF_TABLE: 1}  # the fast path too


def test_a_relation_record_is_an_update_of_the_contact_it_names() -> None:
    payload = parse(body(joined(5), left("6_12"), left(7.0)), [RULE])
    assert [(r.table, r.key, r.operation) for r in payload.records] == [(11000, 5, "Update"), (11000, 6, "Update")]
    assert payload.relations == 2 and payload.relations_unread == {PROF_TABLE: 1}  # 7.0: no composite key
    # a Delete of the relation is no deletion of the person: the worker reads them again
    assert all(r.operation == "Update" for r in payload.records)


@pytest.mark.parametrize(
    ("record", "rule", "contact"),
    [
        (left("12_5"), RelationTable(table=PROF_TABLE, key_part="last"), 5),
        (left("5_12"), RelationTable(table=PROF_TABLE), None),  # key_part none: the key is not read
        (left("5_x"), RULE, 5),
        (left("x_5"), RULE, None),
        (left("1_2_3"), RULE, None),  # not a two-part key: never guessed
        (left(" 5_12"), RULE, None),
        ({**joined("5.0"), "key": 99}, RULE, 5),
        ({**joined(5), "fields": {"k_contact": "8"}}, RULE, 8),
        (
            {**joined(5), "fields": {"PERSON": 8}, "key": None},
            RelationTable(table=PROF_TABLE, contact_field="person"),
            8,
        ),
        ({**joined(5), "fields": {"K_CONTACT": "x"}, "key": "x"}, RULE, None),
        ({**joined(5), "fields": {"K_CONTACT": 2**60}, "key": 3}, RULE, None),
    ],
)
def test_the_contact_key_is_read_exactly_or_not_at_all(
    record: dict[str, Any], rule: RelationTable, contact: int | None
) -> None:
    payload = parse(body(record), [rule])
    assert [r.key for r in payload.records] == ([contact] if contact else [])
    assert payload.relations_unread == ({} if contact else {PROF_TABLE: 1})


def test_a_relation_record_folds_into_the_person_s_own_change() -> None:
    contact = {"table": 11000, "key": 5, "operation": "Create", "fields": {"NAME": "Doe"}, "date": DATE}
    (change,), contacts, skipped = split_by_person("acme", parse(body(contact, joined(5), left("5_13")), [RULE]))
    assert (change.person_key, change.operation, contacts, skipped) == (5, "Create", 3, 0)


def config(relation_tables: list[dict[str, Any]] | None = None) -> IntegrationConfig:
    raw = consent_config("acme").model_dump()
    if relation_tables is not None:
        raw["efficy"]["relation_tables"] = relation_tables
    return config_from_dict(raw)


def test_the_setting_is_checked() -> None:
    assert config().efficy.relation_tables == []
    (rule,) = config([{"table": PROF_TABLE, "contact_field": "k_contact"}]).efficy.relation_tables
    assert (rule.contact_field, rule.key_part) == ("K_CONTACT", "none")
    for bad in ([{"table": 11000}], [{"table": 5}, {"table": 5}], [{"table": 5, "key_part": "middle"}]):
        with pytest.raises(ConfigError):
            config(bad)


def _accept(raw: bytes, relation_tables: list[dict[str, Any]] | None = None) -> AcceptResult:
    ts = str(int(time.time()))
    headers = {"X-Efficy-Timestamp": ts, "X-Efficy-Signature": sign(SECRET, ts, raw)}
    return accept(config(relation_tables), "queue-url", headers, raw, SECRET, request_id="req-1")


def test_accept_queues_the_named_persons_counts_the_rest_and_logs_no_key(
    queued: list[ContactChange],
    log: io.StringIO,
    counted: list[tuple[str, float]],
) -> None:
    rules = [{"table": PROF_TABLE, "key_part": "first"}]
    result = _accept(body(joined(4242), left("4343_12"), left(None)), rules)
    assert (result.accepted, result.relations, result.relations_unread) == (2, 2, 1)
    assert sorted(c.person_key for c in queued) == [4242, 4343]
    assert counted == [("WebhookRelationsUnread", 1)]
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    (warning,) = [line for line in lines if line["message"].startswith("webhook relation records without")]
    assert warning["tables"] == {str(PROF_TABLE): 1}
    assert "4242" not in log.getvalue() and "4343" not in log.getvalue()

    queued.clear()
    result = _accept(body(joined(4242)))  # not configured: ignored, and the table id is logged to find it
    assert (result.accepted, result.skipped_other_tables, queued) == (0, 1, [])
    (ignored,) = [json.loads(line) for line in log.getvalue().splitlines() if "other tables ignored" in line]
    assert ignored["tables"] == {str(PROF_TABLE): 1}


def test_a_relation_record_never_replaces_the_contact_s_own_operation() -> None:
    deleted = {"table": 11000, "key": 5, "operation": "Delete", "fields": None, "date": DATE}
    for records in ((deleted, left("5_12")), (left("5_12"), deleted)):
        (change,), _, _ = split_by_person("acme", parse(body(*records), [RULE]))
        assert change.operation == "Delete"
