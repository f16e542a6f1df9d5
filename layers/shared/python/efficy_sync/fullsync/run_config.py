"""The config a full sync's steps sync persons with when a new version was applied during the run.

A run keeps the version it started with (FullSync.config), so that a change applied mid-run does not split the
run in two: mappings, tags and write mode stay the run's. Two things cannot wait for the run to end:
- a sync condition added since (a do-not-contact rule, a country taken out) must stop the run from creating or
  updating persons it excludes, or they are created in APSIS One after the admin excluded them, and stay there
  (a lost condition defaults to `leave`). So a person must pass the conditions of both versions: the run's
  conditions plus those the live version adds. A person only the newer version excludes is handled as a lost
  condition would be, with the more careful `on_condition_lost` of the two (leave before untag before delete),
  and the removal breaker as always;
- a consent mapping removed or re-targeted since (the admin found it maps the wrong CRM profile) must stop
  deciding anyone's consent: the breaker guards against mass opt-outs, nothing else against an opt-in nobody
  gave, and an opt-out it finds is no withdrawal either (the wrong profile says nothing about the person). The
  run drops it, as it drops a CRM-profile tag mapping removed or re-targeted since: the slot or tag is left as
  APSIS holds it, as the live version leaves a mapping it no longer has. A query tag mapping removed or
  re-targeted since is dropped too: the Tags step no longer untags the query's former members, nor do pages
  tag its members (README: "a profile or query tag mapping removed: the tag stays where it is").
The next sync under the live version decides the rest.

A run started with its own write mode (`full-sync start --write-mode`) writes in that mode (Run.write_mode). The
config's mode also says how carefully a first opt-in is made: in import mode, the consents of persons new to us
are read first (existing_optouts.worth_reading), as a load into an account that already holds profiles needs. A
run keeps the more careful of the two: started in import mode on a diff config it reads; started in diff mode on
an import config it still reads (the account is one that held profiles).
"""

from __future__ import annotations

from ..config import IntegrationConfig

#: the order of care: an earlier action takes away less
_CAREFUL = ("leave", "untag", "delete")


def in_write_mode(cfg: IntegrationConfig, write_mode: str) -> IntegrationConfig:
    """`cfg` for a run started in `write_mode`: import when either says import (see the module docstring)."""
    if cfg.full_sync.write_mode == write_mode or write_mode != "import":
        return cfg
    return cfg.model_copy(update={"full_sync": cfg.full_sync.model_copy(update={"write_mode": write_mode})})


def held_to_live(run_cfg: IntegrationConfig, live: IntegrationConfig) -> IntegrationConfig:
    """`run_cfg` with the live version's sync conditions added and the consent and tag mappings it removed
    dropped (see the module docstring)."""
    update: dict[str, object] = {}
    added = [condition for condition in live.sync_conditions if condition not in run_cfg.sync_conditions]
    if added:
        update["sync_conditions"] = [*run_cfg.sync_conditions, *added]
        update["on_condition_lost"] = min(run_cfg.on_condition_lost, live.on_condition_lost, key=_CAREFUL.index)
    consents = [m for m in run_cfg.consent_mappings if m in live.consent_mappings]
    if len(consents) < len(run_cfg.consent_mappings):
        update["consent_mappings"] = consents
    profile_tags = [t for t in run_cfg.tags.profiles if t in live.tags.profiles]
    query_tags = [q for q in run_cfg.tags.queries if q in live.tags.queries]
    if len(profile_tags) < len(run_cfg.tags.profiles) or len(query_tags) < len(run_cfg.tags.queries):
        update["tags"] = run_cfg.tags.model_copy(update={"profiles": profile_tags, "queries": query_tags})
    return run_cfg.model_copy(update=update) if update else run_cfg
