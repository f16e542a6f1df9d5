"""ReleaseRemovals sends only what the run's gate judged: the removals its counted pages held. A page that failed
for good held removals its counters never brought to the gate, and a burst of Efficy deletes the real-time
breaker held is read by no page: both were sent by the release of an ordinary run, unjudged. The real FullSync
steps in state-machine order against the simulators (fullsync_harness.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from efficy_sync.clients.errors import EfficyUnavailable
from efficy_sync.fullsync.breaker import confirmable
from efficy_sync.fullsync.report import render_report
from efficy_sync.fullsync.sync_input import InvalidSyncInput
from efficy_sync.mapping import needed_fields
from efficy_sync.store.removals import BurstGate
from efficy_sync.sync import PersonSyncer

from tests.integration.fullsync_harness import World, apsis_sim, make_world, person, raw_config  # noqa: F401  (fixtures)

LOST = range(31, 36)  # page 3 (persons 31..40) = Efficy pages 6 (31..35) and 7 (36..40)
GONE = range(41, 56)  # 15 of 60 persons deleted in Efficy at once (a bad clean-up)


def _loaded(make_world: Callable[..., World], persons: int = 60) -> World:
    w = make_world(safety={"max_removal_percent": 3, "min_removals": 2})
    w.efficy_sim.upsert_persons([person(k) for k in range(1, persons + 1)])
    first = w.run()
    assert first["report"]["status"] == "succeeded" and w.in_apsis() == set(range(1, persons + 1))
    return w


def test_removals_of_a_page_that_fails_for_good_are_not_released_unjudged(make_world: Callable[..., World]) -> None:
    w = _loaded(make_world, 100)  # ten pages: one failing for good is within the 10 % tolerated
    # 5 persons stop matching the conditions (on_condition_lost: delete): over the breaker's 3 % of 100
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])

    def efficy_504_on_page_7(page: int, size: int) -> None:
        if (page, size) == (7, 5):
            raise EfficyUnavailable("504 Gateway Time-out (proxy), HTML body")

    w.hook = efficy_504_on_page_7
    out = w.run()
    assert 3 in out["page_errors"], out  # failed on every attempt; 1 page of 10: tolerated
    assert w.in_apsis() == set(range(1, 101)), f"deleted past the breaker: gate={out['gate']}"

    w.hook = lambda page, size: None  # the next run reads the page: the gate judges the 5 removals and halts
    assert w.run()["gate"].halt and w.in_apsis() == set(range(1, 101))


def test_deletes_the_real_time_breaker_held_wait_for_allow_removals(make_world: Callable[..., World]) -> None:
    w = _loaded(make_world)
    for key in GONE:
        w.efficy_sim.delete_person(key)
    # the real-time worker handles the 20 delete webhooks: its breaker lets a few through, then holds the rest
    gate = BurstGate(w.cfg, w.fs.removal_breaker, w.fs.held)
    syncer = PersonSyncer(w.cfg, w.apsis, w.fs.states, email_lookup=w.efficy.find_contacts_by_email, removal_gate=gate)
    for key in GONE:
        current = w.efficy.get_persons([key], needed_fields(w.cfg))
        syncer.sync(key, current.get(key), w.fs.states.get("p17", key))
    held = set(w.fs.held.keys("p17"))
    assert w.fs.removal_breaker.tripped("p17") is not None and len(held) >= 10 and held <= w.in_apsis()

    out = w.run()  # an ordinary nightly full sync: no --allow-removals
    assert out["report"]["status"] == "succeeded"
    assert held <= w.in_apsis(), f"{len(held - w.in_apsis())} held deletes sent unconfirmed; gate={out['gate']}"
    assert set(w.fs.held.keys("p17")) == held  # still held, for the admin

    allowed = w.run(allow_removals=True)  # the admin confirms
    assert allowed["report"]["status"] == "succeeded" and not held & w.in_apsis()
    assert not set(w.fs.held.keys("p17")) and w.fs.removal_breaker.tripped("p17") is None


def test_a_confirmed_count_sends_what_the_admin_read_and_halts_again_on_more(make_world: Callable[..., World]) -> None:
    """`--allow-removals-up-to N`: the admin read a halted run's 5 deletes and confirms 5; meanwhile 3 more persons
    stopped matching, so the confirmed run finds 8 and halts again with nothing removed (the blanket
    `--allow-removals` would have deleted all 8 unjudged); confirming 8 sends them, and only those."""
    w = _loaded(make_world, 100)
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])  # on_condition_lost: delete
    halted = w.run()
    assert halted["gate"].halt and w.in_apsis() == set(range(1, 101))
    assert "--allow-removals-up-to 5" in "\n".join(render_report(halted["report"]))

    w.efficy_sim.upsert_persons([person(k, opened="0") for k in (61, 62, 63)])
    again = w.run(allow_removals_up_to=5)
    assert again["gate"].halt and again["report"]["status"] == "halted" and w.in_apsis() == set(range(1, 101))
    text = "\n".join(render_report(again["report"]))
    assert "more than the 5 confirmed" in text and "--allow-removals-up-to 8" in text

    sent = w.run(allow_removals_up_to=8)
    assert sent["report"]["status"] == "succeeded" and not sent["gate"].halt
    assert w.in_apsis() == set(range(1, 101)) - {*LOST, 61, 62, 63}
    assert "up to 8 removals of each kind held before confirmed" in "\n".join(render_report(sent["report"]))
    assert not set(w.fs.held.keys("p17"))


def test_a_confirmed_count_needs_a_run_that_held_removals_and_raises_only_its_kinds(
    make_world: Callable[..., World],
) -> None:
    """The count confirms what the admin read: after a run that held nothing over its limit there is nothing to
    confirm (Begin refuses, nothing starts); a halted run on deletes raises the deletes' limit only."""
    w = _loaded(make_world, 100)
    with pytest.raises(InvalidSyncInput, match="held no removals over the breaker's limit"):
        w.run(allow_removals_up_to=50)
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])
    halted = w.run()
    assert halted["gate"].halt
    run = w.fs.runs.get("p17", halted["report"]["run_id"])
    assert run is not None and confirmable(run.report or {}) == {"rm:delete"}
    sent = w.run(allow_removals_up_to=5)
    counters = w.fs.runs.get("p17", sent["report"]["run_id"]).counters  # type: ignore[union-attr]
    assert {k: v for k, v in counters.items() if k.startswith("confirm:")} == {"confirm:rm:delete": 5}
    assert sent["report"]["status"] == "succeeded" and w.in_apsis() == set(range(1, 101)) - set(LOST)


def test_a_delete_shifting_an_efficy_page_boundary_inside_one_worker_s_page_is_covered_by_seams(
    make_world: Callable[..., World],
) -> None:
    """full_sync.page_size 10 with efficy.page_size 5: each page worker reads two Efficy pages. A person deleted
    between them moved the first person of the second to the end of the first, already read; Seams re-read only
    the records before each worker's first page, so that person was synced by nobody and the run SUCCEEDED."""
    w = make_world()
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 61)])
    done = {"deleted": False}

    def delete_before_the_second_half_of_page_2(page: int, size: int) -> None:
        if (page, size) == (5, 5) and not done["deleted"]:
            done["deleted"] = True
            w.efficy_sim.delete_person(3)  # the real-time worker parks its delete webhook (shift 1)

    w.hook = delete_before_the_second_half_of_page_2
    out = w.run()
    assert done["deleted"] and out["seams"]["shift"] == 1 and out["report"]["status"] == "succeeded"
    assert not set(range(4, 61)) - w.in_apsis(), out["report"]["persons"]


def test_removals_a_page_held_are_not_counted_again_by_a_seam_window(make_world: Callable[..., World]) -> None:
    """A seam window re-reads persons its neighbouring page synced; a removal that page held (not in the person's
    state) was planned and counted again: 3 profile deletes counted 6, and a run within the threshold HALTED."""
    w = make_world(safety={"max_removal_percent": 5, "min_removals": 5})
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 61)])
    assert w.run()["report"]["status"] == "succeeded"
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in (8, 9, 10)])  # the end of page 0: deletes

    def between(page: int) -> None:
        if page == 5:  # three persons after the last page are deleted: the count drops by 3, Seams runs
            for key in (51, 52, 53):
                w.efficy_sim.delete_person(key)

    out = w.run(between_pages=between)
    assert out["seams"]["shift"] == 3 and not out["gate"].halt
    assert out["report"]["breaker"]["removals"]["rm:delete"]["removals"] == 3, out["report"]["breaker"]
    assert not {8, 9, 10} & w.in_apsis()  # within the threshold: released


def test_a_held_opt_out_refused_in_the_release_is_reported_failed(make_world: Callable[..., World]) -> None:
    """The release counted only consents, tags and deletes: an opt-out APSIS refused left no trace in the report."""
    import json

    w = make_world()
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 31)])
    assert w.run()["report"]["status"] == "succeeded"
    w.efficy_sim.upsert_persons([person(7, profiles=[])])  # a CRM opt-out (one removal: within the threshold)

    def refuse_the_opt_out() -> None:
        problem = json.dumps({"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "refused"})
        w.apsis_sim.add_fault(
            path_regex=r"/profiles/7/.*consents",
            method="POST",
            status=400,
            body=problem,
            content_type="application/problem+json",
        )

    out = w.run(before_release=refuse_the_opt_out)
    assert out["release"]["released"] == 1
    state = w.fs.states.get("p17", 7)
    assert state is not None and state.error_category, "the failure is recorded on the person"
    report = out["report"]
    # the run's report says one person failed: their only change, the CRM opt-out, did not reach APSIS
    assert report["persons"]["failed"] == 1, (report["persons"], report.get("consents"))


def _vip(w: World) -> set[int]:
    return {int(p["key"]) for p in w.apsis_sim.profiles() if "vip" in str(p)}


def test_the_release_sends_no_more_untags_of_a_tag_than_its_gate_let_through(make_world: Callable[..., World]) -> None:
    """ReleaseRemovals runs the query-tag mirror again: whoever left the query since the Tags step was judged by
    no gate. A run confirmed `--allow-removals-up-to 5` after a halt on 5 untags sent 20 when 15 more persons left
    the query before its release; now the release holds them again, and the next run's gate judges all 20."""
    tags = {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}], "queries": [{"query": 3618, "tag": "vip"}]}
    w = make_world(safety={"max_removal_percent": 3, "min_removals": 2}, tags=tags)
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 101)])
    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 61))}])
    assert w.run()["report"]["status"] == "succeeded" and _vip(w) == set(range(1, 61))

    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 56))}])  # 5 leave
    assert w.run()["gate"].halt and _vip(w) == set(range(1, 61))

    def fifteen_more_leave() -> None:
        w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 41))}])

    confirmed = w.run(allow_removals_up_to=5, before_release=fifteen_more_leave)
    assert not confirmed["gate"].halt and confirmed["report"]["status"] == "succeeded"
    assert _vip(w) == set(range(1, 61)), "the release untagged more than the 5 confirmed"

    again = w.run()  # the held untags stay in the snapshot: the next gate judges all 20
    assert again["gate"].halt and "--allow-removals-up-to 20" in "\n".join(render_report(again["report"]))
    assert w.run(allow_removals_up_to=20)["report"]["status"] == "succeeded" and _vip(w) == set(range(1, 41))


def test_the_gate_judges_with_the_percentage_the_report_shows(make_world: Callable[..., World]) -> None:
    """4.995 % of 100 holders: the gate judged with 4.995 (limit 4) and halted on 5 deletes, while the report,
    judged again from the recorded 500 hundredths (5.00 %, limit 5), marked no line OVER and told the admin to
    confirm with `--allow-removals-up-to 0`, which the CLI refuses. Both now judge with 5.00 %."""
    w = make_world(safety={"max_removal_percent": 4.995, "min_removals": 2})
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 101)])
    assert w.run()["report"]["status"] == "succeeded"
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])  # 5 deletes of 100 profiles
    out = w.run()
    assert "--allow-removals-up-to 0" not in "\n".join(render_report(out["report"]))
    assert not out["gate"].halt and out["report"]["breaker"]["removals"]["rm:delete"]["limit"] == 5
    assert w.in_apsis() == set(range(1, 101)) - set(LOST)


def test_status_names_the_confirmed_count_for_a_halted_run_and_the_blanket_flag_for_a_real_time_burst(
    make_world: Callable[..., World],
) -> None:
    """`full-sync status` after a halt printed the report's `--allow-removals-up-to 5`, then told the admin to
    send the held persons with `--allow-removals`: any number, unjudged. Only an open real-time breaker needs it."""
    from efficy_sync.fullsync.report import confirm_count
    from efficy_sync_tools.commands._removals import held_lines

    w = _loaded(make_world, 100)
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])
    halted = w.run()
    assert halted["gate"].halt
    text = "\n".join(held_lines("state", "p17", confirm_count(halted["report"])))
    assert "full-sync start p17 --allow-removals-up-to 5 --follow" in text
    assert "full-sync start p17 --allow-removals --follow" not in text

    w.fs.removal_breaker.trip("p17", 12, 3)  # a real-time burst: only --allow-removals closes the breaker
    text = "\n".join(held_lines("state", "p17", confirm_count(halted["report"])))
    assert "full-sync start p17 --allow-removals --follow" in text


def test_an_emptied_query_s_held_untags_are_confirmed_with_the_count_its_report_names(
    make_world: Callable[..., World],
) -> None:
    """A query that answers no members holds its 3 untags whatever the threshold, and its report names
    `--allow-removals-up-to 3`; Begin read the held count where the Tags step's answer does not keep it and
    refused that command ("held no removals over the breaker's limit")."""
    tags = {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}], "queries": [{"query": 3618, "tag": "vip"}]}
    w = make_world(safety={"max_removal_percent": 5, "min_removals": 10}, tags=tags)
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 21)])
    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": [1, 2, 3]}])
    assert w.run()["report"]["status"] == "succeeded" and _vip(w) == {1, 2, 3}

    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": []}])
    held = w.run()
    assert held["report"]["status"] == "succeeded" and _vip(w) == {1, 2, 3}
    assert "--allow-removals-up-to 3" in held["report"]["query_tags"]["errors"]["vip"]

    sent = w.run(allow_removals_up_to=3)
    assert sent["report"]["status"] == "succeeded" and _vip(w) == set()


def test_a_confirmed_count_raises_each_kind_only_to_the_count_the_admin_read(make_world: Callable[..., World]) -> None:
    """The admin read 5 deletes and 2 untags of vip over their limits and confirmed `--allow-removals-up-to 5`:
    every kind was raised to 5, so when 3 more persons left vip's query meanwhile, 5 untags went out, 3 of them
    seen by nobody. Each kind is now raised to the count the admin read (N at most): the run halts on vip."""
    tags = {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}], "queries": [{"query": 3618, "tag": "vip"}]}
    w = make_world(safety={"max_removal_percent": 3, "min_removals": 2}, tags=tags)
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 101)])
    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 61))}])
    assert w.run()["report"]["status"] == "succeeded" and _vip(w) == set(range(1, 61))

    deleted = set(range(91, 96))  # 5 of 100 profiles (limit 3); 59 and 60 leave vip: 2 of 60 (limit 1)
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in deleted])
    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 59))}])
    halted = w.run()
    over = {name for name, row in halted["report"]["breaker"]["removals"].items() if row["over"]}
    assert halted["gate"].halt and over == {"rm:delete", "rm:untag:vip"}
    assert "--allow-removals-up-to 5" in "\n".join(render_report(halted["report"]))

    w.efficy_sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 56))}])  # 3 more leave
    again = w.run(allow_removals_up_to=5)
    assert again["report"]["status"] == "halted", "5 untags of vip sent where the admin read 2"
    assert _vip(w) == set(range(1, 61)) and w.in_apsis() == set(range(1, 101))  # nothing removed
    text = "\n".join(render_report(again["report"]))
    assert "more than the 5 confirmed; tag removals vip up to 2: the count the confirmed run showed" in text

    sent = w.run(allow_removals_up_to=5)  # the admin read 5 untags this time: both kinds confirmed at 5
    assert sent["report"]["status"] == "succeeded"
    assert _vip(w) == set(range(1, 56)) and w.in_apsis() == set(range(1, 101)) - deleted


def test_a_confirmation_looks_past_runs_that_ended_before_their_gate(make_world: Callable[..., World]) -> None:
    """A halted run, then one that failed before its gate and one cancelled before it: Begin refused the count
    the admin read in the halted run ("the newest run (ID, cancelled) held no removals over the breaker's
    limit"), though neither later run judged or removed anything. It now confirms the halted run's counts."""
    w = _loaded(make_world, 100)
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])
    assert w.run()["gate"].halt

    failing = w.begin()
    w.fs.plan(failing)
    w.fs.fail(failing, {"Error": "EfficyUnavailable", "Cause": "503 from Efficy"})
    w.begin(allow_removals_up_to=5)
    assert w.fs.execution_ended(w.arn(), "ABORTED")["matched"]  # the admin cancelled it before its gate
    statuses = [run.status for run in w.fs.runs.history("p17", 3)]
    assert statuses == ["cancelled", "failed", "halted"]
    assert w.in_apsis() == set(range(1, 101))

    sent = w.run(allow_removals_up_to=5)
    assert sent["report"]["status"] == "succeeded" and w.in_apsis() == set(range(1, 101)) - set(LOST)
    counters = w.fs.runs.get("p17", sent["report"]["run_id"]).counters  # type: ignore[union-attr]
    assert {k: v for k, v in counters.items() if k.startswith("confirm:")} == {"confirm:rm:delete": 5}


def test_a_confirmation_after_runs_that_never_judged_says_so_and_starts_nothing(
    make_world: Callable[..., World],
) -> None:
    w = _loaded(make_world, 100)
    cancelled = w.begin()
    assert w.fs.execution_ended(w.arn(), "ABORTED")["matched"]
    with pytest.raises(InvalidSyncInput) as refused:
        w.run(allow_removals_up_to=5)
    message = str(refused.value)
    assert f"the newest run the breaker judged ({w.fs.runs.history('p17', 2)[1].run_id}, succeeded;" in message
    assert f"{cancelled['run_id']} cancelled ended before it did) held no removals over" in message
    assert "--dry-run" in message


def test_status_names_the_count_begin_confirms_after_runs_that_ended_before_their_gate(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`full-sync status` named `--allow-removals-up-to N` only when the newest run was halted: after a halt, a
    run that failed before its gate and one cancelled before it, it told the admin to send the held persons with
    the blanket `--allow-removals` (any number, unjudged), though Begin confirms the halted run's 5 (judged_run)."""
    import argparse

    from efficy_sync_tools.commands.full_sync import status_command

    w = _loaded(make_world, 100)
    w.efficy_sim.upsert_persons([person(k, opened="0") for k in LOST])
    assert w.run()["gate"].halt
    failing = w.begin()
    w.fs.plan(failing)
    w.fs.fail(failing, {"Error": "EfficyUnavailable", "Cause": "503 from Efficy"})
    w.begin()
    assert w.fs.execution_ended(w.arn(), "ABORTED")["matched"]
    assert [run.status for run in w.fs.runs.history("p17", 3)] == ["cancelled", "failed", "halted"]

    queue = w.fs.queue_url
    for variable, value in {"CONFIG_TABLE": "config", "STATE_TABLE": "state", "CONTACT_QUEUE_URL": queue}.items():
        monkeypatch.setenv(variable, value)
    args = argparse.Namespace(integration_id="p17", run=None, format="text", follow=False, interval=1.0)
    status_command(args)
    text = capsys.readouterr().out
    assert "removals held by the blast-radius breaker: 5 person(s)" in text
    assert "full-sync start p17 --allow-removals-up-to 5 --follow" in text
    assert "full-sync start p17 --allow-removals --follow" not in text
