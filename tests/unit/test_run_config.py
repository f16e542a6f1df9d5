"""run_config.held_to_live: a full sync keeps its version, held to the sync conditions applied since and
without the consent and CRM-profile tag mappings removed since."""

from __future__ import annotations

from pathlib import Path

import yaml
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.run_config import held_to_live
from efficy_sync.mapping import Desired, map_person, needed_fields

RAW = yaml.safe_load((Path(__file__).parents[2] / "examples" / "demo.yaml").read_text())


def cfg(**changes: object):
    return config_from_dict({**RAW, **changes})


def test_the_live_conditions_are_added_and_the_run_keeps_its_mappings() -> None:
    run = cfg(on_condition_lost="delete")
    live = cfg(
        sync_conditions=[*RAW["sync_conditions"], {"field": "LANGUAGE", "equals": "EN"}],
        field_mappings=RAW["field_mappings"][1:],
        on_condition_lost="untag",
    )
    held = held_to_live(run, live)
    assert [c.field for c in held.sync_conditions] == [*(c["field"] for c in RAW["sync_conditions"]), "LANGUAGE"]
    assert held.consent_mappings == run.consent_mappings and held.field_mappings == run.field_mappings
    assert held.on_condition_lost == "untag"  # the more careful of the two
    assert "LANGUAGE" in needed_fields(held)  # the page asks Efficy for the field the new condition reads
    person = {"K_CONTACT": 7, "EMAIL1": "p7@example.com", "OPENED": "1", "ROBINSON": "0", "LANGUAGE": "FR"}
    assert isinstance(map_person(run, person), Desired)
    assert not isinstance(map_person(held, person), Desired)


def test_nothing_added_leaves_the_run_s_config_as_it_is() -> None:
    run = cfg()
    assert held_to_live(run, cfg(field_mappings=RAW["field_mappings"][1:], on_condition_lost="delete")) is run
    fewer = cfg(sync_conditions=RAW["sync_conditions"][:1])
    assert held_to_live(run, fewer) is run  # a condition taken away waits for the next run


def member_of_everything(cfg_: object) -> dict[str, object]:
    profiles = sorted({m.crm_profile for m in cfg_.consent_mappings})  # type: ignore[attr-defined]
    return {
        "K_CONTACT": 7,
        "EMAIL1": "p7@example.com",
        "MOBILE": "+32470000007",
        "OPENED": "1",
        "ROBINSON": "0",
        "profiles": profiles,
    }


def test_a_consent_mapping_removed_since_decides_no_consent_for_the_rest_of_the_run() -> None:
    run = cfg()
    first, *rest = RAW["consent_mappings"]
    assert rest, "the demo config needs two consent mappings for this test"
    held = held_to_live(run, cfg(consent_mappings=rest))
    slot = (first["subscription"], first["channel"])
    member = map_person(run, member_of_everything(run))
    assert isinstance(member, Desired) and member.consents[slot] == "opt-in"  # the run alone would opt them in
    desired = map_person(held, member_of_everything(run))
    assert isinstance(desired, Desired)
    assert slot not in desired.consents, "an opt-in from a mapping the admin removed during the run"
    assert all(desired.consents[(m["subscription"], m["channel"])] == "opt-in" for m in rest)
    left = map_person(held, {**member_of_everything(run), "profiles": []})
    assert isinstance(left, Desired) and slot not in left.consents  # nor an opt-out from the wrong profile


def test_a_consent_or_profile_tag_mapping_re_targeted_since_is_dropped_too() -> None:
    run = cfg()
    first, *rest = RAW["consent_mappings"]
    tag, *other_tags = RAW["tags"]["profiles"]
    moved = {**first, "crm_profile": 999}
    live = cfg(
        consent_mappings=[moved, *rest],
        tags={**RAW["tags"], "profiles": [{**tag, "crm_profile": 998}, *other_tags]},
    )
    held = held_to_live(run, live)
    assert [m.subscription for m in held.consent_mappings] == [m["subscription"] for m in rest]
    assert [t.tag for t in held.tags.profiles] == [t["tag"] for t in other_tags]
    assert held.tags.queries == run.tags.queries
    assert tag["tag"] not in held.managed_tags()  # nobody untagged on the wrong profile either
    assert held.sync_conditions == run.sync_conditions and held.on_condition_lost == run.on_condition_lost
    assert len(run.consent_mappings) == len(RAW["consent_mappings"])  # the cached run config is untouched
    assert held_to_live(run, cfg(consent_mappings=list(reversed(RAW["consent_mappings"])))) is run  # order only


def test_a_query_tag_mapping_removed_since_no_longer_tags_nor_untags() -> None:
    """The admin removed a query tag mapping during the run (it tagged the wrong query): the Tags step would
    still untag the query's former members, the pages still tag its members. The README promises the tag stays
    where it is once its mapping is removed."""
    run = cfg(tags={**RAW["tags"], "queries": [{"query": 3618, "tag": "vip"}, {"query": 7, "tag": "partners"}]})
    live = cfg(tags={**RAW["tags"], "queries": [{"query": 7, "tag": "partners"}]})
    held = held_to_live(run, live)
    assert [q.tag for q in held.tags.queries] == ["partners"]
    assert "vip" not in held.managed_tags() and "partners" in held.managed_tags()
    assert [t.tag for t in held.tags.profiles] == [t.tag for t in run.tags.profiles]
    desired = map_person(held, member_of_everything(run), query_tags={"vip", "partners"})
    assert isinstance(desired, Desired) and "vip" not in desired.tags and desired.tags["partners"] is True


def test_a_run_in_its_own_write_mode_reads_as_that_mode_does() -> None:
    """`full-sync start --write-mode import` on a diff config: the run's config says import, so the consents of a
    person new to us are read before a first opt-in (existing_optouts), as import mode's first loads need."""
    from efficy_sync.existing_optouts import worth_reading
    from efficy_sync.fullsync.run_config import in_write_mode

    diff = cfg(full_sync={"write_mode": "diff"})
    assert in_write_mode(diff, "diff") is diff and not worth_reading(diff, None)
    imported = in_write_mode(diff, "import")
    assert imported.full_sync.write_mode == "import" and worth_reading(imported, None)
    assert imported.model_copy(update={"full_sync": diff.full_sync}) == diff  # nothing else changed
    # a diff run of an import config (an account that held profiles) still reads: the more careful of the two
    assert in_write_mode(imported, "diff") is imported and worth_reading(imported, None)
