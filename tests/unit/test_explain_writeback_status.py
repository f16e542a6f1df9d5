"""`explain` is what the runbook (OptOutDLQNotEmptyAlarm) has an admin run to check an opt-out's write-back. Its text
showed an APSIS opt-out record still awaiting its write-back (never confirmed by Efficy, e.g. dead-lettered) for a
person already out of the CRM profile exactly like a confirmed one; it now says which of the two it is."""

from __future__ import annotations

from efficy_sync.consent import OptOutRecord, merge_optouts
from efficy_sync.explain import explain, render_explain
from efficy_sync.mapping import map_person
from efficy_sync.person_plan import plan_operations
from efficy_sync.state_updates import apply_operations

from tests.unit.test_explain import CFG, person

SLOT = "usercreated.topics.newsletter-ab12|email"


def news_row(record: OptOutRecord) -> str:
    d = map_person(CFG, person())
    state = merge_optouts(apply_operations(None, d, plan_operations(d, None)), {SLOT: record})
    # the person is out of CRM profile 12 now (left it; the write-back's removal or a CRM user's)
    text = render_explain(explain(CFG, person(profiles=[13], D_CHANGE="2024-05-01T12:00:00"), state))
    return next(line for line in text.splitlines() if "newsletter-ab12 (email" in line)


def test_explain_text_tells_a_pending_write_back_from_a_confirmed_one() -> None:
    pending = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis", awaiting_writeback=True)
    done = pending.model_copy(
        update={"awaiting_writeback": False, "confirmed": True, "confirmed_stamp": "2024-05-01T11:00:05"}
    )
    assert news_row(pending) != news_row(done), news_row(pending)


def test_explain_text_names_where_the_opt_out_record_stands() -> None:
    pending = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis", awaiting_writeback=True)
    assert "awaiting its write-back to Efficy, not confirmed" in news_row(pending)
    done = pending.model_copy(update={"awaiting_writeback": False, "confirmed": True, "confirmed_stamp": "S1"})
    assert "[APSIS opt-out record: confirmed by Efficy (stamp S1)]" in news_row(done)


def test_explain_text_shows_no_record_where_there_is_none() -> None:
    d = map_person(CFG, person())
    text = render_explain(explain(CFG, person(), apply_operations(None, d, plan_operations(d, None))))
    assert "opt-out record" not in text
