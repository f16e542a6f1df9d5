"""`efficy-sync explain ID PERSON_KEY`: why a person did or did not sync, and what the next sync would send.

It reads what the real-time worker reads (the person as Efficy has it now, with the same fields and CRM
profiles, and the stored sync state) and runs the same mapping and diff, without writing anywhere. Personal
values are masked, so the output can be pasted into a support ticket.
"""

from __future__ import annotations

import argparse
import json
import sys

from efficy_sync_tools.commands._aws import EXIT_USAGE, CliError, cli_command


def register(sub: argparse._SubParsersAction) -> None:
    explain = sub.add_parser("explain", help="why a person did or did not sync (conditions, values, consents)")
    explain.add_argument("integration_id", metavar="ID")
    explain.add_argument("person_key", metavar="PERSON_KEY", help="the Efficy K_CONTACT")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.add_argument(
        "--with-queries",
        action="store_true",
        help="also run the configured tag queries to show their tags (as a full sync does; real-time sync "
        "leaves query tags alone)",
    )
    explain.set_defaults(func=explain_command)


def person_key(text: str) -> int:
    try:
        key = int(text)
    except ValueError:
        key = 0
    if key <= 0:
        raise CliError(f"PERSON_KEY must be an Efficy K_CONTACT (a positive whole number), not {text!r}", EXIT_USAGE)
    return key


@cli_command
def explain_command(args: argparse.Namespace) -> int:
    from efficy_sync.explain import explain, render_explain
    from efficy_sync.mapping import needed_fields
    from efficy_sync.store.configs import ConfigStore
    from efficy_sync.store.persons import PersonStateStore

    from efficy_sync_tools.commands._aws import efficy_client, table_names
    from efficy_sync_tools.commands.config import live_config

    key = person_key(args.person_key)
    config_table, state_table = table_names()
    cfg = live_config(ConfigStore(config_table), args.integration_id)

    query_tags: set[str] | None = None
    with efficy_client(cfg) as efficy:
        person = efficy.get_persons([key], needed_fields(cfg)).get(key)
        if person is not None and args.with_queries:
            query_tags = {q.tag for q in cfg.tags.queries if key in efficy.run_query(q.query)}
    state = PersonStateStore(state_table).get(cfg.integration_id, key)

    report = explain(cfg, person, state, query_tags)
    report.setdefault("person_key", str(key))
    if args.format == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(render_explain(report))
    sys.stdout.flush()
    if person is None:
        raise CliError(f"person {key} is not known to Efficy (integration {cfg.integration_id}, {cfg.efficy.base_url})")
    return 0
