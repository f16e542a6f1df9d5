"""clients/json_stream.py: an APSIS profile export read as it arrives reads exactly what json.loads read whole.

The export used to be held whole (bytes, text, tree and objects at once) and ran the drift check's Lambda out of
memory; read chunk by chunk instead, a chunk may end anywhere (inside a string, an escape, a number, a UTF-8
character), and an answer that is not one JSON object must still be refused, never read as fewer profiles."""

from __future__ import annotations

import json
from typing import Any

import pytest
from efficy_sync.clients.json_stream import read_object

DOCUMENT = (
    '\ufeff { "total" : 3, "links": {"self": "/x?a=[1]"},\n "profiles" : [ {"keys": {"k": "1"}, "v": 12345},'
    '{"s": "br]ack}et, \\"quote\\" \\u00e9\\ud83d\\ude00 Müller 😀", "n": -1.5e3},\t[], 7 ], "after": null }'
)


def read(chunks: list[bytes], streamed: str = "profiles") -> tuple[list[Any], dict[str, Any], int]:
    items: list[Any] = []
    members, count = read_object(iter(chunks), streamed, items.append)
    return items, members, count


def test_every_split_of_the_bytes_reads_what_json_loads_reads() -> None:
    data = DOCUMENT.encode()
    whole = json.loads(data.decode("utf-8-sig"))
    expected_members = {k: v for k, v in whole.items() if k != "profiles"}
    splits = [[data[:cut], data[cut:]] for cut in range(len(data) + 1)]
    for chunks in [*splits, [data[i : i + 1] for i in range(len(data))]]:
        items, members, count = read(chunks)
        assert items == whole["profiles"] and count == 4, chunks
        assert members == expected_members, chunks


def test_a_number_cut_at_the_end_of_a_chunk_is_read_whole() -> None:
    assert read([b'{"total": 12', b'3, "profiles": []}'])[1:] == ({"total": 123}, 0)
    assert read([b'{"profiles": [12', b"3]}"])[0] == [123]


def test_a_number_cut_after_its_point_or_exponent_is_read_whole() -> None:
    """`1.` and `2e` decode as 1 and 2 with the rest left over: a member or item so cut was refused."""
    data = b'{"profiles": [1.25, -2e3, 4E+1], "took": 1.5e-2, "total": 3}'
    whole = json.loads(data)
    for cut in range(len(data) + 1):
        items, members, _ = read([data[:cut], data[cut:]])
        assert (items, members) == (whole["profiles"], {"took": 0.015, "total": 3}), cut


@pytest.mark.parametrize(
    ("chunks", "members", "count"),
    [
        ([b'{"items": []}'], {"items": []}, -1),  # no profiles list: the caller refuses it
        ([b'{"profiles": {"a": 1}}'], {"profiles": {"a": 1}}, -1),
        ([b"{}"], {}, -1),
        ([b'{"profiles": []}'], {}, 0),
    ],
)
def test_an_answer_without_a_list_to_stream_returns_its_members(chunks: list[bytes], members: Any, count: int) -> None:
    assert read(chunks)[1:] == (members, count)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"profiles": [{"a": 1}, {"a": 2}',  # cut off
        b'{"profiles": [{"a": 1}]}\n{"profiles": []}',  # NDJSON: a second document
        b'{"profiles": [{"a": 1}], "profiles": []}',  # given twice: json.loads kept the last one only
        b'{"profiles": [{"a": 1} {"a": 2}]}',
        b'{"profiles": [{"a": 1},]}',
        b'{"profiles" [1]}',
        b'{1: 2, "profiles": []}',
        b'[{"a": 1}]',
        b"keys,attributes\n1,2\n",  # CSV
    ],
)
def test_anything_but_one_json_object_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        read([data[i : i + 4] for i in range(0, len(data), 4)] or [b""])


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(UnicodeDecodeError):
        read([b'{"profiles": ["caf', b'\xe9"]}'])
