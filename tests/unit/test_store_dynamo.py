"""The store's one DynamoDB helper (store/dynamo.py) keeps the Python types callers always had: boto3's
TypeDeserializer reads numbers as Decimal and binaries as Binary, which would leak into run counters, page
numbers and query snapshots. No AWS: the (de)serializers are pure."""

from __future__ import annotations

from decimal import Decimal

from efficy_sync.store.dynamo import attr, from_item, key, plain, to_item
from hypothesis import given, settings
from hypothesis import strategies as st


def test_values_read_back_as_the_python_types_they_were_written_as() -> None:
    fields = {
        "count": 3,
        "ratio": 0.25,
        "name": "acme",
        "empty": "",
        "flag": False,
        "none": None,
        "data": b"\x00\x01",
        "pages": {"1", "2"},
        "counts": {"profiles": 12, "nested": {"deep": 1.5}},
        "list": [1, "a", True],
    }
    back = from_item(to_item(fields))
    assert back == fields
    assert type(back["count"]) is int and type(back["ratio"]) is float and type(back["data"]) is bytes
    assert type(back["counts"]["profiles"]) is int and type(back["list"][0]) is int


def test_the_wire_shape_is_dynamodbs() -> None:
    assert attr("x") == {"S": "x"} and attr(7) == {"N": "7"} and attr(True) == {"BOOL": True}
    assert attr(0.1) == {"N": "0.1"}  # a float is stored as the Decimal of its text, never refused
    assert attr({"a": None}) == {"M": {"a": {"NULL": True}}}
    assert key("PERSON#acme#1", "STATE") == {"pk": {"S": "PERSON#acme#1"}, "sk": {"S": "STATE"}}


def test_whole_decimals_are_ints_and_others_floats() -> None:
    assert plain({"N": "42"}) == 42 and type(plain({"N": "42"})) is int
    assert plain({"N": "1.0"}) == 1 and type(plain({"N": "1.0"})) is int  # as the hand-written reader did
    assert plain({"N": "2.5"}) == 2.5 and not isinstance(plain({"N": "2.5"}), Decimal)
    assert plain({"NS": ["1", "2"]}) == {1, 2}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.booleans(), st.integers(min_value=-(10**37), max_value=10**37)))
def test_the_fast_path_writes_what_boto3_s_serializer_writes(value: object) -> None:
    """attr() writes strings, booleans and integers itself (a page's CPU): the same attribute values as
    TypeSerializer, or stored states would differ from those written before."""
    from boto3.dynamodb.types import TypeSerializer

    assert attr(value) == TypeSerializer().serialize(value)


def test_other_types_still_go_through_boto3_s_serializer() -> None:
    class Text(str):
        """a str subclass (a pydantic or enum value) is not taken by the fast path's exact type check"""

    assert attr(Text("a")) == {"S": "a"}
    assert attr(None) == {"NULL": True}
    assert attr(1.5) == {"N": "1.5"}
