"""A short way through moto's server for the local stack's busiest call: SQS SendMessageBatch (JSON protocol).

A 10,000-record webhook is 1,000 SendMessageBatch calls. moto answered each in about 7 ms of CPU, and three
quarters of that was its generic machinery (Flask's dispatch, moto's request parser driven by the service
model, its response serializer), not the queue: the webhook's 202 waited for that. This WSGI layer in front
of moto's app parses the JSON request itself, calls the same backend method moto's SQSResponse calls
(`SQSBackend.send_message_batch`: the same validation, de-duplication, sequence numbers and MD5s) and writes
the answer moto would (`Successful` entries with MessageId, MD5OfMessageBody, MD5OfMessageAttributes when there
are attributes, SequenceNumber on FIFO queues; `Failed` as the backend reports them).

Anything it does not handle exactly as moto does goes to moto's own path untouched (same body): another
action, an account chosen by header or environment, message system attributes, binary or list attributes,
a malformed body, and every error the backend raises (moto raises them before any message is stored: it
validates the whole batch first), so error answers stay moto's.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from .moto_threads import DYNAMODB_LOCK

TARGET = "AmazonSQS.SendMessageBatch"
BATCH_GET = "DynamoDB_20120810.BatchGetItem"
_SIMPLE_TYPES = ("String", "Number")


class _NotHandled(Exception):
    """The request is left to moto's own path."""


class _Stored(Exception):
    """Failed after messages were stored: answering through moto's path would store them twice."""


def wrap(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """moto's WSGI app with SendMessageBatch answered directly (idempotent: an app is wrapped once)."""
    if getattr(app, "_efficy_sync_fastpath", False):
        return app

    def fast(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        handler = HANDLERS.get(environ.get("HTTP_X_AMZ_TARGET", ""))
        if handler is None or "HTTP_X_MOTO_ACCOUNT_ID" in environ:
            return app(environ, start_response)
        if "MOTO_ACCOUNT_ID" in os.environ:
            return app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = handler(environ, raw)
        except _Stored:
            raise  # a 500, as moto's path would give for an error at that point
        except Exception:  # moto's path answers it, error or not, from the same bytes
            environ["wsgi.input"] = io.BytesIO(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))
            return app(environ, start_response)
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("x-amzn-RequestId", str(uuid.uuid4())),
            ],
        )
        return [body]

    fast._efficy_sync_fastpath = True  # type: ignore[attr-defined]
    return fast


def _credential_scope(environ: dict[str, Any], service: str = "sqs") -> tuple[str, str]:
    """(access key, region) from the SigV4 Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        raise _NotHandled("unsigned request")
    credential = auth.split(marker, 1)[1].split(",", 1)[0].split("/")
    if len(credential) < 5 or credential[3] != service:
        raise _NotHandled(f"not a {service} credential scope")
    return credential[0], credential[2]


def _entries(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries as moto's SQSResponse hands them to the backend, or _NotHandled for anything unusual."""
    raw = request.get("Entries")
    if not isinstance(raw, list) or not raw:
        raise _NotHandled("no entries")
    entries: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("MessageBody"), str) or "Id" not in entry:
            raise _NotHandled("unusual entry")
        if set(entry) - {"Id", "MessageBody", "MessageGroupId", "MessageDeduplicationId", "MessageAttributes"}:
            raise _NotHandled("a field this path does not handle (DelaySeconds, system attributes)")
        attributes = entry.get("MessageAttributes") or {}
        for value in attributes.values():
            if (
                not isinstance(value, dict)
                or set(value) != {"DataType", "StringValue"}
                or str(value["DataType"]).split(".", 1)[0] not in _SIMPLE_TYPES
            ):
                raise _NotHandled("binary, list or custom-typed attribute")
        entries[str(index)] = {**entry, "MessageAttributes": attributes, "DelaySeconds": None}
    return entries


def send_message_batch(environ: dict[str, Any], raw: bytes) -> bytes:
    """Run SendMessageBatch on moto's backend and return moto's JSON answer; raises to leave it to moto."""
    from moto.iam.models import get_account_id_from
    from moto.sqs.models import sqs_backends
    from moto.sqs.utils import validate_message_attributes

    access_key, region = _credential_scope(environ)
    request = json.loads(raw)
    queue_url = request.get("QueueUrl")
    if not isinstance(queue_url, str) or not queue_url:
        raise _NotHandled("no queue URL")
    queue_name = queue_url.split("/")[-1]
    entries = _entries(request)
    for entry in entries.values():
        validate_message_attributes(entry["MessageAttributes"])
    backend = sqs_backends[get_account_id_from(access_key)][region]
    queue = backend.get_queue(queue_name)
    # moto validates the whole batch before it stores a message: an exception from here on stored none
    messages, failed = backend.send_message_batch(queue_name, entries)
    try:
        successful = []
        for message in messages:
            item = {"Id": message.user_id, "MessageId": message.id, "MD5OfMessageBody": message.body_md5}
            if message.message_attributes:
                item["MD5OfMessageAttributes"] = message.attribute_md5
            if queue.fifo_queue:
                item["SequenceNumber"] = message.sequence_number
            successful.append(item)
        return json.dumps({"Successful": successful, "Failed": failed}).encode()
    except Exception as exc:
        raise _Stored(str(exc)) from exc


#: 16 MB, DynamoDB's (and moto's) limit on one BatchGetItem answer
_BATCH_GET_BYTES = 16 * 1024 * 1024


def batch_get_item(environ: dict[str, Any], raw: bytes) -> bytes:
    """BatchGetItem on moto's backend, answered as moto answers it; raises to leave it to moto.

    Each state read of a full sync is one of these (100 keys): moto's response serializer, driven by the
    service model, took most of its ~50 ms. Handled: plain key lookups (ConsistentRead or not). Left to moto:
    projections, AttributesToGet, ReturnConsumedCapacity, more than 100 keys, duplicate keys, an unknown table,
    and an answer that might pass 16 MB (moto then returns UnprocessedKeys)."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.iam.models import get_account_id_from

    access_key, region = _credential_scope(environ, "dynamodb")
    request = json.loads(raw)
    if not isinstance(request, dict) or set(request) != {"RequestItems"}:
        raise _NotHandled("ReturnConsumedCapacity or another option")
    tables = request["RequestItems"]
    if not isinstance(tables, dict) or not tables:
        raise _NotHandled("no tables")
    total = 0
    for spec in tables.values():
        if (
            not isinstance(spec, dict)
            or set(spec) - {"Keys", "ConsistentRead"}
            or not isinstance(spec.get("Keys"), list)
        ):
            raise _NotHandled("a projection or another option")
        keys = spec["Keys"]
        if len({json.dumps(k, sort_keys=True) for k in keys}) != len(keys):
            raise _NotHandled("duplicate keys: moto's error")
        total += len(keys)
    if not 0 < total <= 100:
        raise _NotHandled("moto's validation error")
    backend = dynamodb_backends[get_account_id_from(access_key)][region]
    responses: dict[str, list[dict[str, Any]]] = {}
    capacity = []
    size = 0
    # moto's tables are plain dicts (a missing key even inserts an empty one): read them under the lock that
    # serialises moto's own DynamoDB requests (moto_threads.py), or a concurrent Query fails mid-iteration
    with DYNAMODB_LOCK:
        for table_name, spec in tables.items():
            found = responses[table_name] = []
            for key in spec["Keys"]:
                item = backend.get_item(table_name, key, [])  # raises for an unknown table: moto's error then
                if item is not None:
                    described = {name: _attribute(value) for name, value in item.attrs.items()}
                    size += len(json.dumps(described))  # JSON is never shorter than DynamoDB's item size
                    if size > _BATCH_GET_BYTES:
                        raise _NotHandled("near 16 MB: moto splits the answer")
                    found.append(described)
            capacity.append({"TableName": table_name, "CapacityUnits": float(len(spec["Keys"]))})
    return json.dumps({"Responses": responses, "UnprocessedKeys": {}, "ConsumedCapacity": capacity}).encode()


def _attribute(value: Any) -> Any:
    """A stored attribute as DynamoDB's JSON: maps and lists hold DynamoType values all the way down (moto's
    serializer unwraps them the same way), binary is base64 (DynamoType.to_json)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if not isinstance(value, DynamoType):
        return value
    if value.type == "M" and isinstance(value.value, dict):
        return {"M": {k: _attribute(v) for k, v in value.value.items()}}
    if value.type == "L" and isinstance(value.value, list):
        return {"L": [_attribute(v) for v in value.value]}
    return value.to_json()


#: X-Amz-Target -> the short path answering it
HANDLERS: dict[str, Callable[[dict[str, Any], bytes], bytes]] = {
    TARGET: send_message_batch,
    BATCH_GET: batch_get_item,
}
