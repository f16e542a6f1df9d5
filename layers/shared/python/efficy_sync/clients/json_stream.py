"""One JSON object read from a stream of bytes without holding it whole: its members, one list's items one by one.

APSIS One's profile export is one JSON document holding every profile of the account (about 700 bytes each):
read with `json.loads(response.content)`, its bytes, their text, the parsed tree and what we built from it were
all held at once, and the drift check's Lambda ran out of memory on an account of ~250,000 profiles. Here only
the top level is read by hand (`{"key": value, ...}`, and the `[item, ...]` of the member named `streamed`); every
value and item is decoded by the standard library's json decoder from a buffer of a few chunks. The other members
(`links`, `total`, a next page's cursor: anywhere in the object) are returned whole: they are small.

Not a general streaming parser: a library such as ijson reads one path at a time, and seeing both the items and
the members around them took per-event Python work (about four times the time of this reader on a 200 MB export).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"
_NUMBER_GOES_ON = frozenset("0123456789.eE+-")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_object(chunks: Iterable[bytes], streamed: str, on_item: Callable[[Any], None]) -> tuple[dict[str, Any], int]:
    """Reads one JSON object (UTF-8, a byte-order mark allowed) from `chunks`: each item of its member `streamed`,
    when that is a list, goes to `on_item` as it is read. Returns the other members and how many items there were
    (-1 when `streamed` is absent or not a list; it is then among the members). Raises ValueError for anything
    but one JSON object (a truncated body, a second document as in NDJSON, a `streamed` list given twice) and
    UnicodeDecodeError for bytes that are not UTF-8."""
    text = _Text(iter(chunks))
    text.expect("{")
    members: dict[str, Any] = {}
    count = -1
    first = True
    while text.peek() != "}":
        if not first:
            text.expect(",")
        first = False
        key = text.value()
        if not isinstance(key, str):
            raise ValueError("a member's name is not a string")
        text.expect(":")
        if key == streamed and (count >= 0 or key in members):
            raise ValueError(f"{streamed!r} is given twice")  # json.loads would keep the last one only
        if key == streamed and text.peek() == "[":
            count = 0
            for item in text.items():
                on_item(item)
                count += 1
        else:
            members[key] = text.value()
    text.expect("}")
    if text.peek():
        raise ValueError("more data after the JSON object")
    return members, count


class _Text:
    """The document's text, decoded chunk by chunk; `text[pos:]` is what is not read yet."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.decode = codecs.getincrementaldecoder("utf-8-sig")().decode
        self.text = ""
        self.pos = 0
        self.ended = False

    def _more(self) -> bool:
        """Appends the next chunk to what is left to read; False at the end of the stream."""
        if self.ended:
            return False
        chunk = next(self.chunks, None)
        self.ended = chunk is None
        self.text = self.text[self.pos :] + self.decode(chunk or b"", final=self.ended)
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end), not consumed."""
        while True:
            end = len(self.text)
            while self.pos < end and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < end:
                return self.text[self.pos]
            if not self._more():
                return ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} in the JSON document")
        self.pos += 1

    def value(self) -> Any:
        """The next JSON value. One that ends where the buffer ends is read again with more text unless the stream
        has ended (`12` may be the start of `123`); one that does not decode is read again the same way."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if not self._more():
                    raise
                continue
            # a number may go on in the next chunk: `1.` or `2e` decodes as 1 or 2 with the `.` or `e` left over
            cut = end == len(self.text) or (_is_number(value) and self.text[end] in _NUMBER_GOES_ON)
            if not cut or not self._more():
                self.pos = end
                return value

    def items(self) -> Iterator[Any]:
        """The items of the list that starts here."""
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.peek() == "]":
                self.pos += 1
                return
            self.expect(",")
