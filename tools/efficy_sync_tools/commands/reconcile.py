"""`efficy-sync reconcile ID [--sample N | --all] [--fix]`: drift between Efficy and APSIS One, per category.

Reads Efficy's persons page by page and the section's profiles from one APSIS One profile export, and
reports, per category, how many persons drift and a few of them (person keys and what differs, never a
personal value). `--fix` repairs through the normal sync path: the drifting persons go on the real-time
queue, where the worker syncs them from a fresh Efficy read with every consent rule in force
(efficy_sync/reconcile_run.py says why). `--all` is resumable: run it again with the same scope and it goes
on from the last page it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from efficy_sync_tools.commands._args import non_negative_int, positive_int
from efficy_sync_tools.commands._aws import EXIT_FOUND, cli_command

DEFAULT_SAMPLE = 500
#: exit code when drift was found and not repaired (`--fix` not given, or persons `--fix` left for another run):
#: scripts and schedules alert on it
DRIFT_FOUND = EXIT_FOUND
TITLES = {
    "missing": "in Efficy and matching, missing in APSIS One",
    "orphaned": "in APSIS One, deleted or no longer matching in Efficy",
    "attributes": "attribute values differ from the mapping",
    "consents": "consents differ from the consent rules",
    "tags": "tags differ",
}
NOTE_TITLES = {
    "kept_optouts": "opt-outs in APSIS One the CRM would opt in: kept (an opt-out is never repaired into an opt-in)",
    "pending_opt_ins": "double opt-ins awaiting the person's confirmation where the CRM would opt in: left to them",
    "kept_by_policy": "profiles of deleted / no longer matching persons kept by on_delete / on_condition_lost",
    "email_conflicts": "e-mail changes held back (see explain)",
    "kept_values": "values in APSIS One this integration never wrote, where the CRM field is empty: kept",
    "unconfirmed_absence": "persons Efficy did not list and did not prove gone: not judged",
    "unreadable_conditions": "persons whose condition value is missing or cannot be read: left as they are, not judged",
}


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("reconcile", help="drift between Efficy and APSIS One, per category; --fix repairs it")
    cmd.add_argument("integration_id", metavar="ID")
    which = cmd.add_mutually_exclusive_group()
    which.add_argument(
        "--sample", type=positive_int, metavar="N", help=f"the first N persons of the scope (default {DEFAULT_SAMPLE})"
    )
    which.add_argument("--all", action="store_true", help="every person of the scope (resumable)")
    cmd.add_argument("--from-key", type=non_negative_int, default=0, metavar="KEY", help="start at this K_CONTACT")
    cmd.add_argument("--to-key", type=positive_int, default=None, metavar="KEY", help="stop after this K_CONTACT")
    cmd.add_argument("--restart", action="store_true", help="--all: ignore a saved cursor and start over")
    cmd.add_argument("--fix", action="store_true", help="repair the drift through the normal sync path")
    cmd.add_argument("--format", choices=("text", "json"), default=None, help="same as --output")
    cmd.set_defaults(func=reconcile_command)


@cli_command
def reconcile_command(args: argparse.Namespace) -> int:
    from efficy_sync.reconcile_run import Reconciler, Scope, fix
    from efficy_sync.store.configs import ConfigStore, UnknownIntegration
    from efficy_sync.store.persons import PersonStateStore
    from efficy_sync.store.reconcile_cursor import CursorStore

    from efficy_sync_tools.commands._aws import (
        EXIT_USAGE,
        CliError,
        apsis_client,
        efficy_client,
        setup_library_env,
        table_names,
    )
    from efficy_sync_tools.commands.config import unknown_integration

    if args.to_key is not None and args.to_key < args.from_key:
        # an empty range checks nobody and reports "drift: 0", which a scheduled check would take for clean
        raise CliError(f"--to-key {args.to_key} is before --from-key {args.from_key}: no person to check", EXIT_USAGE)

    config_table, state_table = table_names()
    configs = ConfigStore(config_table)
    try:
        cfg = configs.get(args.integration_id)
    except UnknownIntegration:
        raise unknown_integration(configs, args.integration_id) from None

    scope = Scope(
        sample=None if args.all else (args.sample or DEFAULT_SAMPLE), from_key=args.from_key, to_key=args.to_key
    )
    states = PersonStateStore(state_table)
    with efficy_client(cfg) as efficy:
        reconciler = Reconciler(cfg, efficy, apsis_client(cfg), states, cursors=CursorStore(state_table))
        result = reconciler.run(scope, resume=not args.restart)
    out: dict[str, Any] = {"integration_id": cfg.integration_id, "scope": _scope(scope), **result.to_dict()}
    out["fix"] = None  # a stable document: null when --fix was not asked for
    if args.fix:
        from efficy_sync.queue import enqueue_changes
        from efficy_sync.settings import settings

        setup_library_env()
        out["fix"] = fix(cfg, result, states, lambda changes: enqueue_changes(settings().contact_queue_url, changes))
    if "json" in (args.format, getattr(args, "output", None)):
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(render(out))
    sys.stdout.flush()
    return exit_code(out, fixing=args.fix)


def exit_code(out: dict[str, Any], *, fixing: bool) -> int:
    """DRIFT_FOUND while drift is left that another run repairs: found without --fix, or left by --fix (counted
    before a resumed run's cursor, or a person whose state kept changing while --fix marked it). A script running
    `--fix` took 0 for "all repaired" and never ran it again for those."""
    if not fixing:
        return DRIFT_FOUND if out.get("total_drift") else 0
    left = out["fix"]["not_fixed"]
    return DRIFT_FOUND if left.get("earlier_pages") or left.get("changed_meanwhile") else 0


def _again(out: dict[str, Any]) -> str:
    """The command that checks and repairs the same scope again."""
    scope = out["scope"]
    words = ["efficy-sync reconcile", out["integration_id"], "--all" if scope["all"] else f"--sample {scope['sample']}"]
    if scope["from_key"]:
        words.append(f"--from-key {scope['from_key']}")
    if scope["to_key"] is not None:
        words.append(f"--to-key {scope['to_key']}")
    return " ".join([*words, "--fix"])


def _scope(scope: Any) -> dict[str, Any]:
    return {"sample": scope.sample, "all": scope.sample is None, "from_key": scope.from_key, "to_key": scope.to_key}


def render(out: dict[str, Any]) -> str:
    scope = out["scope"]
    which = "all persons" if scope["all"] else f"a sample of {scope['sample']:,} persons"
    lines = [
        f"reconcile {out['integration_id']}: {which}"
        + (" (resumed)" if out.get("resumed") else "")
        + f"; {out['persons_checked']:,} checked, {out['profiles_exported']:,} APSIS One profiles in scope",
        f"drift: {out['total_drift']:,} ({out['persons_drifting']:,} person(s))",
    ]
    for category, title in TITLES.items():
        count = out["counts"].get(category, 0)
        lines.append(f"  {category:<11} {count:>7,}  {title}")
        for example in out["examples"].get(category, [])[:5]:
            lines.append(f"      person {example['person_key']}: {_describe(example['details'])}")
    notes = [(n, c) for n, c in out["notes"].items() if c]
    if notes:
        lines.append("not drift:")
        lines += [f"  {c:>7,}  {NOTE_TITLES.get(n, n)}" for n, c in notes]
    lines.append("limits:")
    lines += [f"  - {text}" for text in out["limitations"]]
    if out.get("fix"):
        fixed = out["fix"]
        lines.append(f"fix: {fixed['enqueued']:,} person(s) queued for a sync ({fixed['path']})")
        for category, count in fixed["not_fixed"].items():
            if category == "earlier_pages":
                lines.append(
                    f"  not fixed: {count:,} person(s) found drifting before this resumed run's cursor: "
                    f"run `efficy-sync reconcile {out['integration_id']} --all --restart --fix` to repair them"
                )
                continue
            if category == "changed_meanwhile":
                lines.append(
                    f"  not fixed: {count:,} person(s) whose state another sync kept storing while --fix marked it: "
                    f"run `{_again(out)}` again to repair them"
                )
                continue
            lines.append(f"  not fixed: {count:,} {category} (see the examples)")
        if fixed["query_tags_pending_full_sync"]:
            lines.append(f"  {fixed['query_tags_pending_full_sync']:,} query tag(s): repaired by the next full sync")
    return "\n".join(lines)


def _describe(details: list[dict[str, Any]]) -> str:
    parts = []
    for d in details:
        if "attribute" in d:
            parts.append(f"{d['attribute']} ({d['should']})")
        elif "topic" in d:
            parts.append(f"{d['topic']} ({d['channel']}): APSIS {d['apsis']}, rules {d['rules']}")
        elif "tag" in d:
            parts.append(
                f"tag {d['tag']}: APSIS {'set' if d['apsis'] else 'unset'}, rules {'set' if d['rules'] else 'unset'}"
            )
        elif "reason" in d:
            parts.append(f"{d['reason']}: should {d['should']}" + (f" ({d['not_fixed']})" if "not_fixed" in d else ""))
        else:
            parts.append("no profile")
    return "; ".join(parts)
