"""The blast-radius breaker's counting and threshold (safety.py), and what a held removal does to a sync."""

from __future__ import annotations

import json
from typing import Any

import pytest
from efficy_sync.config import ConfigError, config_from_dict
from efficy_sync.consent import OptOutRecord
from efficy_sync.person_plan import CreateProfile, DeleteProfile, PatchAttributes, PatchTags, SetConsent
from efficy_sync.safety import (
    ALLOW_COUNTER,
    HALT_COUNTER,
    MIN_COUNTER,
    PERCENT_COUNTER,
    base_counts,
    gated,
    is_removal,
    judge,
    limit,
    removal_counts,
    split_removals,
    verdict_of,
)
from efficy_sync.state import PersonState
from efficy_sync.sync import PersonSyncer

from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_optout_sync import CFG, NEWS, SLOT, FakeApsis, person

OPTOUT = f"rm:optout:{SLOT}"


def state(**fields: Any) -> PersonState:
    base: dict[str, Any] = {"integration_id": "acme", "person_key": "7", "exists_in_apsis": True}
    return PersonState(**{**base, **fields})


class Refuse:
    """A gate that holds every removal and remembers whose."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, list[Any]]] = []

    def admit(self, key: int, removals: list[Any]) -> bool:
        self.asked.append((key, removals))
        return False


# ---- what counts as a removal --------------------------------------------------------------------------------


def test_an_opt_out_of_a_consent_apsis_holds_is_a_removal() -> None:
    assert is_removal(SetConsent("7", NEWS, "email", "opt-out"), state(consents={SLOT: "opt-in"}))


def test_an_opt_out_confirming_an_apsis_unsubscribe_is_never_a_removal_to_hold() -> None:
    record = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis", awaiting_writeback=True)
    held = state(consents={SLOT: "opt-in"}, optouts={SLOT: record})
    assert not is_removal(SetConsent("7", NEWS, "email", "opt-out"), held)


def test_an_opt_out_confirming_an_apsis_unsubscribe_recorded_under_another_case_is_never_held() -> None:
    """The unsubscribe was recorded as the webhook spelled the topic (not mapped then); the mapping added since
    spells it otherwise. Counted as a removal, the breaker held back the person's own opt-out."""
    record = OptOutRecord(at="2024-05-01T11:00:00Z", source="apsis")
    held = state(consents={SLOT: "opt-in"}, optouts={f"{NEWS.upper()}|email": record})
    assert not is_removal(SetConsent("7", NEWS, "email", "opt-out"), held)


def test_nothing_is_removed_from_a_profile_apsis_does_not_have() -> None:
    for op in (SetConsent("7", NEWS, "email", "opt-out"), DeleteProfile("7"), PatchTags("7", {"vip": False})):
        assert not is_removal(op, None)
        assert not is_removal(op, state(exists_in_apsis=False))


def test_additions_and_updates_are_not_removals() -> None:
    known = state()
    for op in (
        CreateProfile("7"),
        PatchAttributes("7", {"a": None}),
        SetConsent("7", NEWS, "email", "opt-in"),
        PatchTags("7", {"vip": True}),
    ):
        assert not is_removal(op, known)


def test_a_tag_patch_that_adds_and_removes_is_split_so_the_addition_can_go() -> None:
    ops = [PatchAttributes("7", {"a": "b"}), PatchTags("7", {"vip": True, "old": False})]
    kept, removals = split_removals(ops, state())
    assert kept == [PatchAttributes("7", {"a": "b"}), PatchTags("7", {"vip": True})]
    assert [op.tags for op in removals] == [{"old": False}]


def test_removals_are_counted_per_subscription_channel_tag_and_delete() -> None:
    counts = removal_counts(
        [
            SetConsent("1", NEWS, "email", "opt-out"),
            SetConsent("2", NEWS, "email", "opt-out"),
            PatchTags("1", {"vip": False, "club": False}),
            DeleteProfile("3"),
        ]
    )
    assert counts == {OPTOUT: 2, "rm:untag:vip": 1, "rm:untag:club": 1, "rm:delete": 1}


def test_the_base_counts_what_persons_hold_in_apsis() -> None:
    states = [
        state(person_key="1", consents={SLOT: "opt-in"}, tags={"vip": True, "club": False}),
        state(person_key="2", consents={SLOT: "opt-out"}),
        state(person_key="3", consents={SLOT: "opt-in"}, exists_in_apsis=False),  # not in APSIS: holds nothing
    ]
    assert base_counts(states) == {f"base:optin:{SLOT}": 1, "base:tagged:vip": 1, "base:profiles": 2}


# ---- the threshold -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("removals", "holders", "halts"),
    [
        (40, 100, True),  # a mapping mistake: 40 % of the opted-in persons
        (6, 100, False),  # over 5 % but under the floor of 10: a small integration is not blocked
        (10, 100, True),  # at the floor and over 5 %
        (50, 1000, False),  # exactly 5 %: allowed
        (51, 1000, True),
        (9, 9, False),  # everyone, but fewer than the floor
        (10, 0, True),  # removals from a base we do not know of: beyond any share
    ],
)
def test_a_run_halts_only_beyond_the_share_and_from_the_floor(removals: int, holders: int, halts: bool) -> None:
    verdict = judge({OPTOUT: removals}, {f"base:optin:{SLOT}": holders}, 5.0, 10)
    assert verdict.halt is halts
    assert verdict.lines[OPTOUT]["base"] == holders


def test_each_kind_is_judged_against_its_own_holders() -> None:
    removals = {OPTOUT: 30, "rm:untag:vip": 30, "rm:delete": 30}
    base = {f"base:optin:{SLOT}": 1000, "base:tagged:vip": 100, "base:profiles": 1000}
    verdict = judge(removals, base, 5.0, 10)
    assert verdict.halt
    assert {name for name, line in verdict.lines.items() if line["over"]} == {"rm:untag:vip"}


def test_a_confirmed_count_raises_each_kind_s_limit_to_it_and_no_further() -> None:
    """`--allow-removals-up-to N`: the counts an admin read in a halted run go out; a run that finds more (the CRM
    changed again since) halts again instead of removing whatever it finds, as `--allow-removals` would."""
    removals = {OPTOUT: 20, "rm:untag:vip": 30}
    base = {f"base:optin:{SLOT}": 50, "base:tagged:vip": 100}
    assert judge(removals, base, 5.0, 10).halt
    both = {OPTOUT: 30, "rm:untag:vip": 30}
    confirmed = judge(removals, base, 5.0, 10, confirmed=both)
    assert not confirmed.halt and confirmed.lines[OPTOUT]["limit"] == 30
    again = judge({**removals, "rm:untag:vip": 31}, base, 5.0, 10, confirmed=both)
    assert again.halt and {n for n, line in again.lines.items() if line["over"]} == {"rm:untag:vip"}
    small = judge({OPTOUT: 40}, {f"base:optin:{SLOT}": 1000}, 5.0, 10, confirmed={OPTOUT: 3})
    assert not small.halt and small.lines[OPTOUT]["limit"] == 50  # never below the configured limit
    # a kind the admin never saw over its limit keeps its limit: 20 deletes of 100 profiles halt
    unseen = judge({OPTOUT: 20, "rm:delete": 20}, {**base, "base:profiles": 100}, 5.0, 10, confirmed={OPTOUT: 20})
    assert unseen.halt and {n for n, line in unseen.lines.items() if line["over"]} == {"rm:delete"}


def test_a_confirmation_raises_the_kinds_the_newest_ended_run_held_and_needs_one() -> None:
    """Begin records N for the kinds the run the admin read was over on (and an emptied query's held untags)."""
    from efficy_sync.fullsync.breaker import confirmable, confirmation
    from efficy_sync.store.run_records import Run

    report = {
        "breaker": {"removals": {OPTOUT: {"removals": 20, "over": True}, "rm:delete": {"removals": 2, "over": False}}},
        "query_tags": {"tags": {"vip": {"held": 3}, "gold": {"held": 4}}, "errors": {"vip": "answered no members"}},
    }
    assert confirmable(report) == {OPTOUT, "rm:untag:vip"}  # gold's untags were held for a gate, not emptied

    def ended(report: dict[str, Any] | None, status: str = "halted") -> Run:
        plain = {"integration_id": "acme", "run_id": "r", "status": status, "report": json.dumps(report)}
        return Run.from_plain(plain)

    counters, problem = confirmation([ended(report)], 20)
    assert problem is None
    # each kind up to the count the report showed for it, N at most: vip's 3 held untags, not 20
    assert counters == {"allow_removals_up_to": 20, f"confirm:{OPTOUT}": 20, "confirm:rm:untag:vip": 3}
    assert "held no removals over" in str(confirmation([ended({"breaker": {}}, "succeeded"), ended(report)], 5)[1])
    assert confirmation([], 5) == ({}, "the integration has no ended run")


def test_limit_is_the_larger_of_the_share_and_the_floor() -> None:
    assert limit(1000, 5.0, 10) == 50
    assert limit(20, 5.0, 10) == 9
    assert limit(0, 5.0, 1) == 0


def test_the_report_verdict_is_rebuilt_from_the_run_counters() -> None:
    counters = {
        OPTOUT: 40,
        f"base:optin:{SLOT}": 100,
        PERCENT_COUNTER: 500,
        MIN_COUNTER: 10,
        HALT_COUNTER: 1,
        "persons": 100,
    }
    verdict = verdict_of(counters)
    assert verdict is not None
    assert verdict["would_halt"] and verdict["halted"] and not verdict["allowed"]
    assert verdict["removals"][OPTOUT] == {"removals": 40, "base": 100, "limit": 9, "over": True}
    assert verdict_of({"persons": 3}) is None  # before the gate ran
    assert verdict_of({**counters, HALT_COUNTER: 0, ALLOW_COUNTER: 1})["allowed"]


# ---- a sync with a gate --------------------------------------------------------------------------------------


def test_gated_without_a_gate_sends_everything() -> None:
    ops = [SetConsent("7", NEWS, "email", "opt-out")]
    assert gated(7, ops, state(consents={SLOT: "opt-in"}), None) == (ops, ops, False)


def test_a_held_opt_out_is_not_sent_nor_stored_and_the_next_sync_plans_it_again() -> None:
    store = MemoryPersonStateStore()
    PersonSyncer(CFG, FakeApsis(), store, email_lookup=lambda a: []).sync(7, person(), None)  # opted in, tagged
    gate, apsis = Refuse(), FakeApsis()
    left = person(stamp="2024-05-01T12:00:00", profiles=[], FIRSTNAME="Jo")

    outcome = PersonSyncer(CFG, apsis, store, email_lookup=lambda a: [], removal_gate=gate).sync(
        7, left, store.get("acme", 7)
    )

    assert outcome.held and [type(op).__name__ for op in outcome.removals] == ["SetConsent", "PatchTags"]
    assert [kind for kind, _ in apsis.calls] == []  # no opt-out, no untag reached APSIS
    assert store.get("acme", 7).consents[SLOT] == "opt-in"  # what APSIS still holds
    assert gate.asked and gate.asked[0][0] == 7
    released = FakeApsis()
    PersonSyncer(CFG, released, store, email_lookup=lambda a: []).sync(7, left, store.get("acme", 7))
    assert ("consent", "opt-out") in released.calls and ("tags", {"newsletter-readers": False}) in released.calls
    assert store.get("acme", 7).consents[SLOT] == "opt-out"


def test_the_gate_is_not_asked_in_a_dry_run_but_the_removals_are_counted() -> None:
    store = MemoryPersonStateStore()
    PersonSyncer(CFG, FakeApsis(), store, email_lookup=lambda a: []).sync(7, person(), None)
    gate = Refuse()
    outcome = PersonSyncer(CFG, FakeApsis(), store, dry_run=True, email_lookup=lambda a: [], removal_gate=gate).sync(
        7, person(stamp="2024-05-01T12:00:00", profiles=[]), store.get("acme", 7)
    )
    assert gate.asked == [] and not outcome.held
    assert removal_counts(outcome.removals) == {OPTOUT: 1, "rm:untag:newsletter-readers": 1}


def test_safety_settings_are_validated_and_have_defaults() -> None:
    assert CFG.safety.max_removal_percent == 5.0 and CFG.safety.min_removals == 10
    raw = CFG.model_dump(mode="json", exclude_none=True)
    with pytest.raises(ConfigError, match="max_removal_percent"):
        config_from_dict({**raw, "safety": {"max_removal_percent": 0}})
    assert config_from_dict({**raw, "safety": {"max_removal_percent": 2.5}}).safety.max_removal_percent == 2.5


# ---- the full-sync input and the report ----------------------------------------------------------------------


def test_begin_takes_allow_removals_as_a_boolean_only() -> None:
    from efficy_sync.fullsync.lifecycle import InvalidSyncInput, read_sync_input

    assert read_sync_input({"integration_id": "acme", "allow_removals": True}).allow_removals is True
    assert read_sync_input({"integration_id": "acme"}).allow_removals is False
    with pytest.raises(InvalidSyncInput, match="allow_removals must be true or false"):
        read_sync_input({"integration_id": "acme", "allow_removals": "yes"})


def test_begin_takes_allow_removals_up_to_as_a_count_of_one_or_more_only() -> None:
    from efficy_sync.fullsync.lifecycle import InvalidSyncInput, read_sync_input

    parsed = read_sync_input({"integration_id": "acme", "allow_removals_up_to": 20})
    assert parsed.allow_removals_up_to == 20 and parsed.allow_removals is False
    assert read_sync_input({"integration_id": "acme"}).allow_removals_up_to == 0
    for wrong in (0, -3, True, "20", 2.5):
        with pytest.raises(InvalidSyncInput, match="allow_removals_up_to must be a count"):
            read_sync_input({"integration_id": "acme", "allow_removals_up_to": wrong})
    with pytest.raises(InvalidSyncInput, match="exclude each other"):
        read_sync_input({"integration_id": "acme", "allow_removals": True, "allow_removals_up_to": 20})


@pytest.mark.parametrize("mode", ["diff", "import"])
def test_begin_takes_a_write_mode_for_this_run(mode: str) -> None:
    from efficy_sync.fullsync.lifecycle import read_sync_input

    assert read_sync_input({"integration_id": "acme", "write_mode": mode}).write_mode == mode
    assert read_sync_input({"integration_id": "acme"}).write_mode is None  # the config's


@pytest.mark.parametrize("mode", ["fast", "IMPORT", "", 1, ["import"]])
def test_begin_refuses_a_write_mode_the_config_could_not_have(mode: Any) -> None:
    from efficy_sync.fullsync.lifecycle import InvalidSyncInput, read_sync_input

    with pytest.raises(InvalidSyncInput, match="write_mode must be one of 'diff', 'import'"):
        read_sync_input({"integration_id": "acme", "write_mode": mode})


def test_the_cli_takes_every_write_mode_of_the_config_and_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from efficy_sync.fullsync.sync_input import WRITE_MODES
    from efficy_sync_tools.commands import full_sync

    parser = argparse.ArgumentParser()
    full_sync.register(parser.add_subparsers())
    for mode in WRITE_MODES:
        assert parser.parse_args(["full-sync", "start", "acme", "--write-mode", mode]).write_mode == mode
    with pytest.raises(SystemExit):
        parser.parse_args(["full-sync", "start", "acme", "--write-mode", "fast"])
    err = capsys.readouterr().err
    assert all(repr(mode) in err for mode in WRITE_MODES), err


def test_the_report_lists_removals_first_and_says_the_run_halted() -> None:
    from efficy_sync.fullsync.report import render_report

    counters = {OPTOUT: 40, f"base:optin:{SLOT}": 100, PERCENT_COUNTER: 500, MIN_COUNTER: 10, HALT_COUNTER: 1}
    report = {"integration_id": "acme", "run_id": "r1", "status": "halted", "breaker": verdict_of(counters)}
    lines = render_report(report)
    removals = next(i for i, line in enumerate(lines) if line.strip().startswith("removals"))
    pages = next(i for i, line in enumerate(lines) if line.strip().startswith("pages:"))
    assert removals < pages
    assert any(f"opt-outs {NEWS} [email]" in line and line.split()[-4:] == ["40", "100", "9", "OVER"] for line in lines)
    assert any("HALTED by the blast-radius breaker" in line and "--allow-removals" in line for line in lines)
    dry = render_report(
        {**report, "status": "succeeded", "dry_run": True, "breaker": verdict_of({**counters, HALT_COUNTER: 0})}
    )
    assert any("the real run WOULD HALT" in line for line in dry)


def test_a_halted_report_judged_with_another_percentage_names_its_largest_count() -> None:
    """A halted report judged with another percentage (an old run) marks no line over: it named
    `--allow-removals-up-to 0`, a count the CLI refuses; it names its largest line instead."""
    from efficy_sync.fullsync.report import confirm_count, render_report

    counters = {OPTOUT: 40, f"base:optin:{SLOT}": 100, PERCENT_COUNTER: 500, MIN_COUNTER: 10}
    halted = {
        "integration_id": "acme",
        "status": "halted",
        "breaker": verdict_of({**counters, PERCENT_COUNTER: 4000, HALT_COUNTER: 1}),
    }
    assert confirm_count(halted) == 40
    assert any("--allow-removals-up-to 40 (a run" in line for line in render_report({**halted, "run_id": "r1"}))


def test_a_dry_run_names_the_confirmed_count_it_was_judged_with() -> None:
    """A dry run started with `--allow-removals-up-to 40` said "the real run would not halt": a real run started
    without the count halts."""
    from efficy_sync.fullsync.report import render_report
    from efficy_sync.safety import CONFIRMED_COUNTER

    counters = {OPTOUT: 40, f"base:optin:{SLOT}": 100, PERCENT_COUNTER: 500, MIN_COUNTER: 10}
    dry = {"integration_id": "acme", "run_id": "r1", "status": "succeeded", "dry_run": True}
    lines = render_report({**dry, "breaker": verdict_of({**counters, CONFIRMED_COUNTER: 40, f"confirm:{OPTOUT}": 40})})
    assert "  breaker: the real run started with --allow-removals-up-to 40 would not halt" in lines
    lines = render_report({**dry, "breaker": verdict_of({**counters, CONFIRMED_COUNTER: 30})})
    assert any("started with --allow-removals-up-to 30 WOULD HALT" in line and "up-to 40)" in line for line in lines)
    assert "  breaker: the real run WOULD HALT (unless started with --allow-removals-up-to 40)" in render_report(
        {**dry, "breaker": verdict_of(counters)}
    )


def test_a_confirmation_carries_the_kinds_a_preview_or_a_halt_again_was_confirmed_for() -> None:
    """A dry run previewing `--allow-removals-up-to N` is over on nothing it was confirmed for (its report says the
    real run with N would not halt), and a confirmed run halting again on one kind is not over on the other it
    held: read from the report alone, the real run was refused after the preview, and the runs halted on each
    kind in turn. A real run that succeeded sent what it was confirmed for: nothing carries over."""
    from efficy_sync.fullsync.breaker import confirmation
    from efficy_sync.store.run_records import Run

    counters = {OPTOUT: 20, "rm:delete": 20, f"base:optin:{SLOT}": 100, "base:profiles": 100}
    counters |= {PERCENT_COUNTER: 500, MIN_COUNTER: 10}
    both = {"allow_removals_up_to": 20, f"confirm:{OPTOUT}": 20, "confirm:rm:delete": 20}

    def ended(counters: dict[str, int], *, dry: bool = False, status: str = "halted") -> Run:
        report = json.dumps({"breaker": verdict_of(counters)})
        plain = {"integration_id": "acme", "run_id": "r", "status": status, "dry_run": dry, "report": report}
        return Run.from_plain({**plain, **{f"c:{k}": v for k, v in counters.items()}})

    preview = ended({**counters, **both}, dry=True, status="succeeded")
    assert not preview.report["breaker"]["would_halt"]  # type: ignore[index]
    assert confirmation([preview], 20) == (both, None)
    again = ended({**counters, OPTOUT: 25, **both})  # halted again: 25 opt-outs, the 20 deletes still held
    # the opt-outs up to 25, the count that halted; the deletes up to the 20 it still held, not 25
    assert confirmation([again], 25)[0] == {**{k: 25 for k in both}, "confirm:rm:delete": 20}
    assert confirmation([ended({**counters, **both}, status="succeeded")], 20)[1] is not None
