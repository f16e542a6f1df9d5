"""Efficy's outgoing webhook: the payload model (how a call proves it comes from Efficy is webhook_auth.py).

The payload: keys are whole numbers in Efficy's key range, the operation one of three words, the date an ISO 8601
date-time. Efficy batches thousands of records per call and its retries are not documented (contracts/efficy.md
§7, §10), so one odd record must not cost the batch: a refused call drops every contact change in it, opt-outs
included, until the next full sync. Hence:
- the harmless variants of what Efficy sends are read as meant: a key or table id written as a whole float
  (123.0, its JSON-RPC clients read keys as doubles, §3) or as digits ("123"); `fields: null` (no changed values,
  as on a create or delete); a numeric user or subject; a null, missing or empty date (absent: it is only part of
  a message's de-duplication identity, see WebhookRecord);
- a record of a configured relation table (a person joining or leaving a CRM profile: config.RelationTable)
  becomes an update of the contact it names, or is counted when it names none;
- a record of a table we ignore is ignored whatever its shape, and a contact record that is still invalid
  (12.5, "12_3", an unknown operation...) is set aside alone (WebhookPayload.invalid, logged by ingest with its
  index, hashed key and reason) while the valid ones are accepted;
- what stays strict: the body (a JSON object with a `records` list) and a call with contact records none of which
  is valid (400): nothing of it could be queued, so refusing it loses nothing, while Efficy keeps its failed
  call, to retry or resend once the cause is fixed, and the refusal shows on the route's alarms.
Error texts name the field, never echo its value.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError

from .values import SURROGATE_ESCAPE, without_surrogates

CONTACT_TABLE_ID = 11000  # Efficy's table id of Cont
#: Efficy keys are positive whole numbers; its JSON-RPC clients read them as doubles (contracts/efficy.md §3),
#: so no key Efficy really sends is above 2**53 - 1. A larger number cannot name a person exactly.
MAX_KEY = 2**53 - 1
#: A whole number written as text: ASCII digits only (int() would also read "12_3", " 12" and other scripts' digits).
_DIGITS = re.compile(r"^([0-9]{1,20})(?:\.0+)?$")  # "123" or "123.0", as a float written as text
#: At most this many problems are named in a 400 (and the count of the rest).
_NAMED_PROBLEMS = 5
#: ISO 8601 date-time as Efficy writes it: a date, a time, optional fraction and offset (bounded length).
_ISO_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?$"
)


class WebhookPayloadError(Exception):
    """Malformed body: answered 400 with the problem named, nothing enqueued."""


def normalise_date(value: str) -> str:
    """An ISO 8601 date-time as a UTC instant with milliseconds ('...T10:00:00.000Z'), so two dates compare as
    instants (a text comparison of '+02:00' and 'Z' forms does not). Raises ValueError without the value."""
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO 8601 date-time such as 2024-05-01T10:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(",", "."))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time such as 2024-05-01T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Efficy's dates without an offset: read as UTC
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("must be an ISO 8601 date-time within years 1 to 9999 in UTC") from None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def whole_number(value: object) -> int:
    """A key or table id as Efficy may write it: a JSON integer, a float with nothing after the point (123.0)
    or ASCII digits ("123", "123.0"). Anything else (12.5, "12_3", " 12", true) names no record for sure: ValueError,
    without the value."""
    if isinstance(value, bool):  # a bool is an int to Python, never a key to Efficy
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # False for inf and nan
        return int(value)
    digits = _DIGITS.match(value) if isinstance(value, str) else None
    if digits:
        return int(digits.group(1))
    raise ValueError("must be a whole number")


def _text_or_none(value: object) -> object:
    """Labels nothing uses (a record's user and subject: the worker refetches the person; the body's database and
    version): a number is kept as its text, and any other non-text value is dropped rather than cost a change."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def _date_or_none(value: object) -> str | None:
    """A date we cannot read ("01/03/2026 10:05", an RFC 1123 date) is an absent one: the date only feeds the
    de-duplication identity, so refusing the record for it would drop the person's change under a 202."""
    if not isinstance(value, str) or not value.strip() or len(value) > 40:
        return None
    try:
        return normalise_date(value)
    except ValueError:
        return None


#: Efficy's operation names in any case; another one (a merge, a name we have never seen) still names a person
#: who changed, so it is queued as a "Resync": the worker refetches the person, and nothing is deleted on it
_OPERATIONS = {"create": "Create", "update": "Update", "delete": "Delete"}


def _operation(value: object) -> str:
    return _OPERATIONS.get(value.strip().lower(), "Resync") if isinstance(value, str) else "Resync"


def _no_fields_if_null(value: object) -> object:
    """`fields` holds the changed values on an update only (contracts/efficy.md §7): null is none changed, and
    so is `[]`, how some serializers write an empty map."""
    return {} if value is None or value == [] else value


class WebhookRecord(BaseModel):
    """One changed record. Only table, key, operation and date are used: the worker refetches the person, so the
    changed values (`fields`) only feed the de-duplication fingerprint and never travel on the queue.

    `date` has no upper bound on purpose: it is only part of a message's de-duplication identity, and nothing
    compares it with stored stamps (the worker orders by the D_CHANGE it refetches), so a date in the future
    cannot hold back a later change, while refusing it would make Efficy drop the real change of a CRM whose
    clock runs ahead of ours. For the same reason it may be absent (None): an undated change cannot outrank a
    dated one, and ingest gives it a de-duplication identity of its own so that it is never taken for a copy of
    an earlier undated change of the same person."""

    model_config = ConfigDict(extra="ignore")

    table: Annotated[StrictInt, BeforeValidator(whole_number), Field(gt=0)]
    # A key is never guessed: 12.5 or "12_3" make the record invalid, only exact spellings of a whole number pass.
    key: Annotated[StrictInt, BeforeValidator(whole_number), Field(gt=0, le=MAX_KEY)]
    operation: Annotated[Literal["Create", "Update", "Delete", "Resync"], BeforeValidator(_operation)] = "Resync"
    user: Annotated[str | None, BeforeValidator(_text_or_none)] = None
    subject: Annotated[str | None, BeforeValidator(_text_or_none)] = None
    fields: Annotated[dict[str, object], BeforeValidator(_no_fields_if_null)] = Field(default_factory=dict)
    date: Annotated[str | None, BeforeValidator(_date_or_none)] = None
    #: made from a relation table's record (config.RelationTable): it says the person changed, not how, so
    #: it never replaces the operation of the contact's own record in the same call (a Delete, say)
    via_relation: bool = False


class InvalidRecord(BaseModel):
    """A record that may be a contact's but could not be read: its place in the batch, its key when that could
    be read (for a hashed key in the log), and the problem naming fields only, never a value."""

    index: int
    key: int | None = None
    problems: list[str]

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


class WebhookPayload(BaseModel):
    """The batch as the ingest uses it. From `parse`, `records` holds the valid contact records only; the other
    tables' records are counted (`other_tables`) and the contact records that could not be read are listed
    (`invalid`)."""

    model_config = ConfigDict(extra="ignore")

    database: str | None = None
    version: str | None = None
    records: list[WebhookRecord]
    other_tables: int = 0
    invalid: list[InvalidRecord] = Field(default_factory=list)
    #: ignored records by table id (no personal data: an admin finds a relation table's id here)
    ignored_tables: dict[int, int] = Field(default_factory=dict)
    #: records of a configured relation table turned into a contact change, and those naming no contact
    relations: int = 0
    relations_unread: dict[int, int] = Field(default_factory=dict)


class _Envelope(BaseModel):
    """The body's outer shape, checked strictly (a JSON object with a records list); the records one by one."""

    model_config = ConfigDict(extra="ignore")

    database: Annotated[str | None, BeforeValidator(_text_or_none)] = None
    version: Annotated[str | None, BeforeValidator(_text_or_none)] = None
    records: list[Any]


def _problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """`path: message` for each error of `exc`, never its input (a value may be personal data)."""
    problems = []
    for err in exc.errors(include_input=False, include_context=False, include_url=False):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{(prefix + path).lstrip('.') or 'body'}: {message}")
    return problems


def _refusal(problems: list[str]) -> WebhookPayloadError:
    more = f" (+{len(problems) - _NAMED_PROBLEMS} more)" if len(problems) > _NAMED_PROBLEMS else ""
    return WebhookPayloadError("; ".join(problems[:_NAMED_PROBLEMS]) + more)


def _readable_key(raw: Mapping[str, object]) -> int | None:
    try:
        key = whole_number(raw.get("key"))
    except ValueError:
        return None
    return key if 0 < key <= MAX_KEY else None


def _as_utf8(body: bytes) -> bytes:
    """The body as UTF-8 JSON text. A byte-order mark is dropped, and a body that is not UTF-8 is read as
    Windows-1252 (Efficy runs on Windows): the names and numbers we use are ASCII either way, and the values
    only feed the de-duplication fingerprint, so neither can change whose change it is. Refusing them lost
    every change of the call, on every retry. The signature was checked on the bytes as sent."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        body = body.decode("cp1252", errors="replace").encode("utf-8")
    return body


#: the generic connector's record operations (APSIS's own sender of the spec: contracts/apsis-one.md MAG3)
_CONNECTOR_OPERATIONS = {"created": "Create", "updated": "Update", "deleted": "Delete"}


def _connector_record(item: object) -> object:
    """A 12.1 generic-connector item as a contact record: `{"record_id", "operation": "created|updated|deleted"}`
    for a record, `{"record_id", "consent_base_id", "has_consented"}` for a consent (a CRM opt-in or opt-out:
    an update, since the worker reads the person's CRM profiles again). Anything else is left as it is, to be
    refused or set aside like any record."""
    if not isinstance(item, dict) or "record_id" not in item or "table" in item:
        return item
    consent = {name: item[name] for name in ("consent_base_id", "has_consented") if name in item}
    operation = item.get("operation", "Update" if consent else None)
    if isinstance(operation, str):
        operation = _CONNECTOR_OPERATIONS.get(operation.strip().lower(), operation)
    return {"table": CONTACT_TABLE_ID, "key": item["record_id"], "operation": operation, "fields": consent}


def _in_the_wrapper(body: bytes) -> bytes | None:
    """The body in the `records` wrapper when it came in another shape we know, or None. One record posted bare
    (Efficy's own n8n trigger accepts this shape); the 12.1 generic connector's bare list (or one item) of
    `record_id` items (contracts/efficy.md §7 and §10: Efficy implements APSIS's spec, whose sender posts
    that shape), which was refused with 400, and the sender does not retry a 400: the changes were lost."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # nested beyond the parser: not a shape we know (400, not 503)
        return None
    if isinstance(value, dict) and "records" not in value and "record_id" in value:
        value = [value]
    # a bare list of SYS_WEBHOOKS records (`table`/`key`) is wrapped too, as one such record is
    if (
        isinstance(value, list)
        and value
        and any(isinstance(v, dict) and ("record_id" in v or "table" in v) for v in value)
    ):
        return json.dumps({"records": [_connector_record(item) for item in value]}).encode()
    if isinstance(value, dict) and "records" not in value and "table" in value and "key" in value:
        return json.dumps({"records": [value]}).encode()
    return None


class RelationRule(Protocol):
    """How a relation table's record names its contact (config.RelationTable)."""

    @property
    def table(self) -> int: ...

    @property
    def contact_field(self) -> str: ...

    @property
    def key_part(self) -> str: ...


def _relation_contact(raw: Mapping[str, Any], rule: RelationRule) -> int | None:
    """The key of the contact a relation record names: its changed values' `contact_field`, else the configured
    part of a composite key ("123_12"); None when neither is a whole key (never a guess: a misread key names
    another person)."""
    candidates: list[object] = []
    fields = raw.get("fields")
    if isinstance(fields, dict):
        candidates += [value for name, value in fields.items() if str(name).upper() == rule.contact_field]
    key = raw.get("key")
    if rule.key_part != "none" and isinstance(key, str) and key.count("_") == 1:
        first, last = key.split("_")
        candidates.append(first if rule.key_part == "first" else last)
    for candidate in candidates:
        try:
            number = whole_number(candidate)
        except ValueError:
            continue
        if 0 < number <= MAX_KEY:
            return number
    return None


def _mended(body: bytes) -> bytes | None:
    """The body with each lone surrogate escape ("Smith\\ud83d", a name cut inside an emoji) replaced, or None
    when it has none. pydantic's JSON reader refuses such an escape, and the whole call was answered 400: every
    other person's change in it was lost (the worker refetches the person; the changed values are not used)."""
    if not SURROGATE_ESCAPE.search(body):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    mended = json.dumps(without_surrogates(value), ensure_ascii=False).encode()
    return None if SURROGATE_ESCAPE.search(mended) else mended


def parse(body: bytes, relation_tables: Iterable[RelationRule] = ()) -> WebhookPayload:
    """Validate the body, then each record on its own (see the module docstring).

    Raises WebhookPayloadError, naming the bad field paths (records[3].key) and never a value, when the body is
    not a JSON object with a `records` list, or when it has contact records and none of them is valid. A record
    whose table cannot be read might be a contact's: it counts as an invalid contact record. A record of one of
    `relation_tables` becomes an update of the contact it names (config.RelationTable)."""
    if not body:
        raise WebhookPayloadError("empty body: expected a JSON object with records[]")
    body = _as_utf8(body)
    relations = {rule.table: rule for rule in relation_tables}
    try:  # the usual call, every record readable: one validation of the whole body (a 10,000-record webhook)
        whole = WebhookPayload.model_validate_json(body)
    except ValidationError:
        pass  # something to set aside, or a body to refuse: record by record below
    else:
        if not any(record.table in relations for record in whole.records):
            contacts = [record for record in whole.records if record.table == CONTACT_TABLE_ID]
            skipped = Counter(record.table for record in whole.records if record.table != CONTACT_TABLE_ID)
            update = {"records": contacts, "other_tables": len(whole.records) - len(contacts)}
            return whole.model_copy(update={**update, "ignored_tables": dict(skipped)})
    try:
        envelope = _Envelope.model_validate_json(body)
    except ValidationError as exc:
        wrapped = _in_the_wrapper(body)
        if wrapped is not None:
            return parse(wrapped, relation_tables)
        mended = _mended(body)
        if mended is not None:
            return parse(mended, relation_tables)
        raise _refusal(_problems(exc)) from None
    records: list[WebhookRecord] = []
    invalid: list[InvalidRecord] = []
    other_tables = 0
    ignored: Counter[int] = Counter()
    unread: Counter[int] = Counter()
    from_relations = 0
    for index, raw in enumerate(envelope.records):
        where = f"records[{index}]"
        if not isinstance(raw, dict):
            invalid.append(InvalidRecord(index=index, problems=[f"{where}: must be an object"]))
            continue
        try:
            table = whole_number(raw.get("table"))
        except ValueError:
            problem = f"{where}.table: must be a whole number"
            invalid.append(InvalidRecord(index=index, key=_readable_key(raw), problems=[problem]))
            continue
        if table in relations:
            contact = _relation_contact(raw, relations[table])
            if contact is None:
                unread[table] += 1
                continue
            # the person is read again, whatever the relation's operation: a relation deleted is no contact deleted
            relation = {"relation_table": table, "relation_key": str(raw.get("key")), "relation_index": index}
            date = _date_or_none(raw.get("date"))
            records.append(
                WebhookRecord(
                    table=CONTACT_TABLE_ID,
                    key=contact,
                    operation="Update",
                    fields=relation,
                    date=date,
                    via_relation=True,
                )
            )
            from_relations += 1
            continue
        if table != CONTACT_TABLE_ID:
            other_tables += 1  # never used, so never checked: its shape cannot cost the batch
            ignored[table] += 1
            continue
        try:
            records.append(WebhookRecord.model_validate(raw))
        except ValidationError as exc:
            invalid.append(InvalidRecord(index=index, key=_readable_key(raw), problems=_problems(exc, where)))
    if invalid and not records:
        raise _refusal([problem for item in invalid for problem in item.problems])
    return WebhookPayload(
        database=envelope.database,
        version=envelope.version,
        records=records,
        other_tables=other_tables,
        invalid=invalid,
        ignored_tables=dict(ignored),
        relations=from_relations,
        relations_unread=dict(unread),
    )
