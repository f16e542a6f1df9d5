"""run_config.held_to_live: a full sync keeps its version, held to the sync conditions applied since."""

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
        consent_mappings=[],
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
    assert held_to_live(run, cfg(consent_mappings=[], on_condition_lost="delete")) is run
    fewer = cfg(sync_conditions=RAW["sync_conditions"][:1])
    assert held_to_live(run, fewer) is run  # a condition taken away waits for the next run
