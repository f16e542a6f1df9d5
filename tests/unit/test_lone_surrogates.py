"""A lone UTF-16 surrogate (a name cut inside an emoji, sent by a .NET server as the JSON escape "\\ud83d")
decodes to a str no UTF-8 can carry. One such value in a webhook call had the whole call refused (every other
person's change lost), and one in an Efficy answer failed a whole full-sync page, every run. The sources mend
it (U+FFFD, as a UTF-8 decoder replaces a broken sequence); the hash no longer fails on one."""

from __future__ import annotations

import json

from efficy_sync.state import value_hash
from efficy_sync.values import SURROGATE_ESCAPE, without_surrogates
from efficy_sync.webhook import parse


def test_a_webhook_with_a_lone_surrogate_keeps_every_record() -> None:
    records = [
        {
            "table": 11000,
            "key": 1,
            "operation": "Update",
            "date": "2026-01-01T10:00:00Z",
            "fields": {"NAME": "S\ud83d"},
        },
        {"table": 11000, "key": 2, "operation": "Update", "date": "2026-01-01T10:00:00Z", "fields": {"NAME": "Jo"}},
    ]
    body = json.dumps({"records": records}).encode()
    assert SURROGATE_ESCAPE.search(body)
    payload = parse(body)
    assert [record.key for record in payload.records] == [1, 2]


def test_a_valid_pair_is_left_alone_and_a_lone_half_is_replaced() -> None:
    decoded = json.loads('{"a": "\\ud83d\\ude00", "b": ["x\\udc00"], "\\ud800": 1}')
    assert without_surrogates(decoded) == {"a": "\U0001f600", "b": ["x\ufffd"], "\ufffd": 1}
    assert not SURROGATE_ESCAPE.search(json.dumps({"a": "é"}).encode())


def test_a_hash_of_a_lone_surrogate_is_a_hash() -> None:
    assert len(value_hash("Smith\ud83d")) == 16 and value_hash("Smith\ud83d") != value_hash("Smith")
