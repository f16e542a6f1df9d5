"""What the real APSIS One may answer that our simulator does not (contracts/apsis-one.md §4, §5, §9), read so
that nothing is recorded as done, removed or opted in on an answer that does not say so."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.clients.apsis_export import parse_export
from efficy_sync.clients.errors import ApsisUnavailable, acknowledgeable, error_class_for
from efficy_sync.fullsync.import_report import failed_rows

CRM = "com.apsis1.keyspaces.crm-id"
NEWS = "usercreated.topics.newsletter-ab12"


def profile(**extra: Any) -> dict[str, Any]:
    return {"keys": {CRM: "7"}, "attributes": {}, "tags": [], "topics": [], **extra}


@pytest.mark.parametrize(
    "entry",
    [
        {"topic_discriminator": NEWS, "channel_discriminator": "com.apsis1.channels.email", "consent_type": "opt-out"},
        {"topic_discriminator": NEWS, "channel_discriminator": "com.apsis1.channels.email", "type": "opt-out"},
        {"topic_discriminator": NEWS, "channel_discriminator": "com.apsis1.channels.email", "type": "OPT-OUT"},
        {"topic_discriminator": NEWS, "channel_discriminator": "email", "consent_type": "opt-out"},
    ],
    ids=["simulator", "type", "upper-case", "short-channel"],
)
def test_an_exported_opt_out_is_read_whatever_the_spelling(entry: dict[str, Any]) -> None:
    """Missed, the opt-out read as "nothing held" and reconcile's repair sent the CRM's opt-in over it."""
    exported = parse_export({"profiles": [profile(topics=[entry])]}, CRM)
    assert exported["7"].consents == {(NEWS, "email"): "opt-out"}


@pytest.mark.parametrize(
    "payload",
    [
        {"profiles": [profile()], "next": "https://api.apsis.one/exports/x?page=2"},
        {"profiles": [profile()], "links": {"next": "/exports/x?page=2"}},
        {"profiles": [profile()], "total": 2},
        {"profiles": [profile()], "has_more": True},
        {"profiles": [profile()], "links": {"hasMore": True}},
        {"profiles": [profile()], "total": "2"},
        {"profiles": [profile(keys=["7"])]},
        {"profiles": [profile(topics="opt-out")]},
        {"profiles": ["7"]},
    ],
    ids=[
        "next",
        "links-next",
        "total",
        "has_more",
        "links-hasMore",
        "total-text",
        "keys-list-of-strings",
        "topics-text",
        "row-text",
    ],
)
def test_an_export_we_cannot_read_whole_is_refused_never_read_as_fewer_profiles(payload: dict[str, Any]) -> None:
    """Profiles left out would be "missing" drift, whose repair re-sends their consents."""
    with pytest.raises(ApsisUnavailable):
        parse_export(payload, CRM)


def test_an_export_that_says_it_is_whole_is_read() -> None:
    """Paging markers that say nothing more follows refuse nothing."""
    for extra in ({"has_more": False}, {"next": None}, {"hasMore": "false"}, {"total": 1}, {"total_count": "1"}):
        assert list(parse_export({"profiles": [profile()], **extra}, CRM)) == ["7"]


def test_export_tags_as_one_mapping_read_only_those_set() -> None:
    """{tag: false} read as set: reconcile saw the tag in place and never repaired it."""
    exported = parse_export({"profiles": [profile(tags={"vip": False, "gold": True, "old": None})]}, CRM)
    assert exported["7"].tags == {"gold"}


def test_export_keys_and_tags_in_other_shapes() -> None:
    rows = [
        profile(
            keys=[{"keyspace_discriminator": CRM, "profile_key": 8}], tags=[{"discriminator": "vip", "value": True}]
        ),
        {"keyspace_discriminator": CRM, "profile_key": "9", "tags": [{"name": "gone", "value": False}, "x"]},
        profile(keys={"com.apsis1.keyspaces.email": "a@b.c"}),  # another keyspace: not ours
    ]
    exported = parse_export({"profiles": rows}, CRM)
    assert sorted(exported) == ["8", "9"]
    assert exported["8"].tags == {"vip"} and exported["9"].tags == {"x"}


@pytest.mark.parametrize(
    "entry",
    [
        {"topic_discriminator": NEWS, "channel_discriminator": "com.apsis1.channels.email", "consent": "opt-out"},
        {"topic_discriminator": NEWS, "consent_type": "opt-out"},  # no channel
        {"topic_discriminator": NEWS, "channel_discriminator": "email", "type": "unsubscribed"},
        {"channel_discriminator": "email", "type": "opt-out"},  # no topic
        {"topic_discriminator": NEWS, "channel_discriminator": "fax", "type": "opt-out"},
    ],
    ids=["type-under-another-key", "no-channel", "unknown-type", "no-topic", "unknown-channel"],
)
def test_a_consent_entry_we_cannot_read_refuses_the_export(entry: dict[str, Any]) -> None:
    """Read as "no consent" (or an unknown type), a held opt-out was drift to reconcile, and --fix opted the
    person in (found by a probing helper, against the real Reconciler and PersonSyncer)."""
    with pytest.raises(ApsisUnavailable, match="consent entry"):
        parse_export({"profiles": [profile(topics=[entry])]}, CRM)


def test_double_opt_in_types_are_read() -> None:
    entries = [
        {"topic_discriminator": NEWS, "channel_discriminator": "email", "type": "pending_opt_in"},
        {"topic_discriminator": "t2", "channel_discriminator": "sms", "type": "Confirmed-Opt-In"},
    ]
    exported = parse_export({"profiles": [profile(topics=entries)]}, CRM)["7"]
    assert exported.consents == {(NEWS, "email"): "pending-opt-in", ("t2", "sms"): "confirmed-opt-in"}


@pytest.mark.parametrize("status", [408, 410, 423])
def test_a_timeout_or_a_gone_or_locked_resource_is_never_the_persons_failure(status: int) -> None:
    """A RejectedValue is recorded on the person and acknowledged: an opt-out answered 408 was dropped."""
    error = error_class_for(status, ApsisUnavailable)("x", status=status)
    assert isinstance(error, ApsisUnavailable) and not acknowledgeable(error)


def rows(n: int) -> list[int]:
    """The keys of a file's rows, in the file's order."""
    return list(range(1, n + 1))


@pytest.mark.parametrize(
    ("report", "failed"),
    [
        ({"failed": 0, "errors": []}, set()),
        # the numbering is not documented (data row from 1, file line with the header as 1, index from 0):
        # row N fails N-1, N and N+1, so the refused person is never recorded as imported
        ({"failed": 1, "errors": [{"row": 4, "message": "bad"}]}, {3, 4, 5}),
        ({"failed": 1, "errors": [{"row": "4"}]}, {3, 4, 5}),
        ({"failed": 1, "errors": [{"row": 1}]}, {1, 2}),
        # row 0: the first row from 0, or the whole file (as our simulator reports a refused file): all of them
        ({"failed": 1, "errors": [{"row": 0}]}, set(range(1, 7))),
        ({"status": "completed_with_errors", "errors": [{"row": 0, "message": "bad file"}]}, set(range(1, 7))),
        ({"failed": 1, "errors": [{"row": 7}]}, {6}),  # the last row, counting the header as line 1
        ({"failed": 2, "errors": [{"row": 2}, {"row": 6}]}, {1, 2, 3, 5, 6}),
        ({"failed": 2, "errors": []}, set(range(1, 7))),  # the details only in a downloadable report
        ({"failed": 2, "errors": [{"row": 1}]}, set(range(1, 7))),
        ({"errors": [{"row": "line 2"}]}, set(range(1, 7))),
        ({"errors": ["row 2: bad"]}, set(range(1, 7))),
        ({"errors": [{"row": 9}]}, set(range(1, 7))),  # out of range: the numbering is not ours
        ({"errors": "2 rows failed"}, set(range(1, 7))),
        # a status saying rows failed, with no row named: which ones is unknown
        ({"status": "completed_with_errors", "rows": 6, "created": 5}, set(range(1, 7))),
        ({"status": "completed_with_errors"}, set(range(1, 7))),
        ({"status": "COMPLETED_WITH_ERRORS", "failed": 0}, set()),
        ({"status": "completed_with_errors", "failed": 1, "errors": [{"row": 3}]}, {2, 3, 4}),
        ({"status": "completed", "rows": 6, "created": 6}, set()),
        # a failed count in another shape than the simulator's integer: 3 refused rows, none named
        ({"status": "completed", "failed": "3"}, set(range(1, 7))),
        ({"status": "completed", "failed": 3.0}, set(range(1, 7))),
        ({"status": "completed", "statistics": {"failed": 3}}, set(range(1, 7))),
        ({"status": "completed", "failed_count": 3}, set(range(1, 7))),
        ({"status": "completed", "failedCount": "1", "errors": [{"row": 2}]}, {1, 2, 3}),
        ({"status": "completed", "failed": "some"}, set(range(1, 7))),  # a count we cannot read
        ({"status": "completed", "failed": "0", "statistics": {"failed": 0}}, set()),
        # a report that accounts for fewer rows than the file had: the others were not imported on its word
        ({"status": "completed", "rows": 3, "created": 3, "failed": 0, "errors": []}, set(range(1, 7))),
        ({"status": "completed", "rows": 6, "created": 3, "updated": 0, "failed": 0}, set(range(1, 7))),
        ({"status": "completed", "rows": 6, "created": 2, "updated": 4, "failed": 0}, set()),
        # an error naming the failed profile's key: that person; a key not in the file: not this file's report
        ({"failed": 1, "errors": [{"row": 2, "profile_key": "5", "message": "bad"}]}, {5}),
        ({"failed": 1, "errors": [{"key": 5}]}, {5}),
        ({"failed": 1, "errors": [{"row": 2, "profile_key": "999"}]}, set(range(1, 7))),
    ],
)
def test_import_rows_are_failed_unless_the_report_says_which(report: dict[str, Any], failed: set[int]) -> None:
    """A row counted as imported is recorded as synced and never sent again: only on a report that names it."""
    assert failed_rows(report, rows(6)) == failed


def test_a_profile_held_compact_reads_back_as_it_was_exported() -> None:
    """Profiles are held as short texts (the whole account's export as objects ran the drift check out of memory):
    every value reads back as json.loads gave it, whatever its type or characters."""
    values = {"a": "Zoë 😀", "b": 12.5, "c": 10**20, "d": None, "e": True, "f": "\ud800", "g": [1, {"x": "y"}], "h": ""}
    entries = [{"topic_discriminator": NEWS, "channel_discriminator": "sms", "type": "opt-out"}]
    rows = [profile(attributes=values, tags=["vip", "ü"], topics=entries), profile(keys={CRM: "8"})]
    exported = parse_export({"profiles": rows}, CRM)
    assert exported["7"].attributes == values and exported["7"].tags == {"vip", "ü"}
    assert exported["7"].consents == {(NEWS, "sms"): "opt-out"}
    assert exported["8"].attributes == {} and exported["8"].tags == set() and exported["8"].consents == {}


def test_a_row_left_out_of_what_is_held_is_read_all_the_same() -> None:
    """Only the rows `keep` takes are held, but a row of ours we cannot read still refuses the whole export."""
    rows = [profile(), profile(keys={CRM: "8"}, topics="opt-out")]
    assert list(parse_export({"profiles": rows[:1]}, CRM, keep=lambda key: key != "7")) == []
    with pytest.raises(ApsisUnavailable):
        parse_export({"profiles": rows}, CRM, keep=lambda key: key == "7")
