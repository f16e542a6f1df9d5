"""`efficy-sync config validate|apply|show|list|history|schema`: the integration configs users write.

A bad file is reported whole (every problem with its path, what was found, what is allowed) and never stored;
`show` prints what `apply` takes back unchanged, so "show > file, edit, apply" is the way to change a config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efficy_sync_tools.commands._args import positive_int
from efficy_sync_tools.commands._aws import EXIT_UNREACHABLE, CliError, cli_command

if TYPE_CHECKING:
    from efficy_sync.config import IntegrationConfig, Problem
    from efficy_sync.store.configs import ConfigStore


def register(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="integration configs: validate, apply, show, list, history, schema")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")

    validate = actions.add_parser("validate", help="check a config file; every problem is listed with its path")
    validate.add_argument("file", type=Path, metavar="FILE")
    validate.add_argument(
        "--online",
        action="store_true",
        help="also check every reference (fields, CRM profiles, queries, attributes, topics, tags) against "
        "what Efficy and APSIS One have, with the integration's secrets",
    )
    validate.set_defaults(func=validate_command)

    apply = actions.add_parser("apply", help="store a config file as the integration's new version")
    apply.add_argument("file", type=Path, metavar="FILE")
    apply.add_argument("--by", help="who applies it (default: $EFFICY_SYNC_USER or the login name)")
    apply.add_argument("--comment", default="", help="why, kept in the history")
    apply.add_argument("--dry-run", action="store_true", help="print what would change, store nothing")
    apply.set_defaults(func=apply_command)

    show = actions.add_parser("show", help="print an integration's config, as `config apply` takes it back")
    show.add_argument("integration_id", metavar="ID")
    show.add_argument(
        "--format", choices=("yaml", "json"), default=None, help="yaml (default) or json; --effective: json unless yaml"
    )
    show.add_argument("--version", type=positive_int, help="an earlier version (see `config history`)")
    show.add_argument(
        "--effective",
        action="store_true",
        help="every setting, defaults included, as JSON or --format yaml (to read: applied back, it would pin every "
        "default)",
    )
    show.add_argument(
        "--webhook-url",
        action="store_true",
        help="print what to register in Efficy for this integration's webhook (URL, and header or token per "
        "efficy.auth.mode), read from the stack and the webhook secret; it shows the secret",
    )
    show.set_defaults(func=show_command)

    listing = actions.add_parser("list", help="every configured integration, with its current version")
    listing.set_defaults(func=list_command)

    history = actions.add_parser("history", help="every applied version: when, by whom, why")
    history.add_argument("integration_id", metavar="ID")
    history.add_argument("--format", choices=("text", "json"), default="text")
    history.set_defaults(func=history_command)

    schema = actions.add_parser("schema", help="JSON Schema of the config file, for editors")
    schema.add_argument("--out", type=Path, help="write it to this file instead of stdout")
    schema.set_defaults(func=schema_command)


# ---- loading ----------------------------------------------------------------------------------------------


def load_file(path: Path, *, from_stack: bool = False) -> tuple[IntegrationConfig | None, list[Problem]]:
    """(config, []) or (None, every problem). An unreadable file is a CliError, not a config problem.
    `from_stack`: secret names are checked against the deployed stack's SecretsPrefix (_aws.secrets_prefix)."""
    from efficy_sync.config import ConfigError, Problem, load_config_text
    from efficy_sync.store.configs import too_large

    from efficy_sync_tools.commands._aws import secrets_prefix

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    # a file with problems is refused before any AWS call; the stack's prefix is read only for a valid one
    try:
        cfg = load_config_text(text, secrets_prefix=None if from_stack else secrets_prefix(from_stack=False))
    except ConfigError as exc:
        return None, exc.problems
    big = too_large(cfg)  # apply would fail on DynamoDB's item limit with a raw AWS error
    if big:
        return None, [Problem("(file)", big)]
    if from_stack:
        try:
            cfg = load_config_text(text, secrets_prefix=secrets_prefix(from_stack=True))
        except ConfigError as exc:
            return None, exc.problems
    return cfg, []


def print_problems(path: Path, problems: list[Problem], stream: Any = None) -> None:
    out = stream or sys.stdout
    count = len(problems)
    print(f"{path}: {count} problem{'s' if count != 1 else ''}", file=out)
    for problem in problems:
        print(f"  {problem}", file=out)
    out.flush()


def config_store() -> ConfigStore:
    from efficy_sync.store.configs import ConfigStore

    from efficy_sync_tools.commands._aws import table_names

    return ConfigStore(table_names()[0])


def unknown_integration(store: ConfigStore, integration_id: str, what: str = "") -> CliError:
    """The message names the integrations that do exist: a typo is the usual cause."""
    known = store.list_ids()
    hint = f"; known: {', '.join(known)}" if known else "; none is configured yet (use `config apply FILE`)"
    return CliError(f"unknown integration {integration_id!r}{what}{hint}")


def live_config(store: ConfigStore, integration_id: str) -> IntegrationConfig:
    """The integration's live config, or the CLI's "unknown integration" error naming the known ones."""
    from efficy_sync.store.configs import UnknownIntegration

    try:
        return store.get(integration_id)
    except UnknownIntegration:
        raise unknown_integration(store, integration_id) from None


# ---- validate ---------------------------------------------------------------------------------------------


def _declared_id(path: Path) -> str | None:
    """The integration_id a file that does not validate still names (a script files its problems under it)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = data.get("integration_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


@cli_command
def validate_command(args: argparse.Namespace) -> int:
    cfg, problems = load_file(args.file, from_stack=args.online)
    notes: list[str] = []
    checked = 0
    if cfg is not None and args.online:
        problems, notes, checked = online_problems(cfg)
    if cfg is not None:
        notes += shared_profile_notes(cfg)
    if args.output == "json":
        document = {
            "file": str(args.file),
            "integration_id": cfg.integration_id if cfg is not None else _declared_id(args.file),
            "valid": not problems,
            "online": bool(args.online),
            "references_checked": checked,
            "problems": [{"path": p.path, "message": p.message, "line": p.line} for p in problems],
            "notes": notes,
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 1 if problems else 0
    for note in notes:
        print(f"note: {note}")
    if problems:
        print_problems(args.file, problems)
        return 1
    assert cfg is not None
    if not args.online:
        print(f"OK: {args.file} (integration {cfg.integration_id}; references not checked, see --online)")
        return 0
    print(f"OK: {args.file} (integration {cfg.integration_id}; {checked} references found in Efficy and APSIS One)")
    return 0


def _listing(
    system: str,
    listers: Iterable[tuple[str, Callable[[], list[dict[str, Any]]], str]],
    on_auth: Callable[[Exception], Problem],
    on_unreachable: Callable[[Exception], Problem],
) -> tuple[dict[str, list[Any]], list[Problem], list[str]]:
    """Calls each list_* method; a refused credential or an API out of reach ends the listing with a problem,
    a kind the API cannot list is left out (and so not checked) with a note."""
    from efficy_sync.clients.errors import ApiError, AuthError, TransientError

    available: dict[str, list[Any]] = {}
    notes: list[str] = []
    for kind, lister, column in listers:
        try:
            rows = lister()
        except AuthError as exc:
            return available, [on_auth(exc)], notes
        except TransientError as exc:
            if exc.status is not None:  # it answered (a 5xx, a 429): an outage, not a wrong address
                raise CliError(
                    f"{system} is out of reach for now ({exc}): nothing was checked; run the validation again later",
                    EXIT_UNREACHABLE,
                ) from None
            return available, [on_unreachable(exc)], notes
        except ApiError as exc:
            notes.append(f"{system} {kind.replace('_', ' ')} could not be listed ({exc}): not checked")
            continue
        available[kind] = [row[column] for row in rows if isinstance(row, dict) and column in row]
    return available, [], notes


def online_problems(cfg: IntegrationConfig) -> tuple[list[Problem], list[str], int]:
    """(problems, notes, references checked): the integration's secrets exist, its credentials work, and every
    name it uses exists in Efficy and APSIS One."""
    from efficy_sync.config import Problem, check_references, references

    from efficy_sync_tools.commands._aws import MissingSecret, apsis_client, efficy_client, secret
    from efficy_sync_tools.commands._detail_check import profile_detail_problems
    from efficy_sync_tools.commands._export_check import page_size_problems

    def missing_secret(path: str, name: str, exc: Exception) -> Problem:
        if isinstance(exc, MissingSecret):
            allowed = "the name of a secret that exists in Secrets Manager (not found there)"
            return Problem(path, f"found {name!r}; allowed: {allowed}", found=repr(name), allowed=allowed)
        return Problem(path, f"found {name!r}; {exc}", found=repr(name))

    def unreachable(path: str, url: str, system: str) -> Callable[[Exception], Problem]:
        return lambda exc: Problem(path, f"found {url!r}; {system} did not answer there ({exc})", found=repr(url))

    def refused(path: str, name: str, system: str) -> Callable[[Exception], Problem]:
        return lambda exc: Problem(path, f"{system} refused the credentials in secret {name!r} ({exc})")

    problems: list[Problem] = []
    notes: list[str] = []
    for path, name in (
        ("efficy.webhook_secret_secret", cfg.efficy.webhook_secret_secret),
        ("apsis.optout_token_secret", cfg.apsis.optout_token_secret),
    ):
        try:
            secret(name)
        except CliError as exc:
            problems.append(missing_secret(path, name, exc))

    available: dict[str, dict[str, list[Any]]] = {"efficy": {}, "apsis": {}}
    try:
        efficy = efficy_client(cfg)
    except CliError as exc:
        problems.append(missing_secret("efficy.api_key_secret", cfg.efficy.api_key_secret, exc))
    else:
        with efficy:
            found, trouble, more = _listing(
                "Efficy",
                [
                    ("fields", efficy.list_fields, "name"),
                    ("crm_profiles", efficy.list_profiles, "id"),
                    ("queries", efficy.list_queries, "id"),
                ],
                refused("efficy.api_key_secret", cfg.efficy.api_key_secret, "Efficy"),
                unreachable("efficy.base_url", cfg.efficy.base_url, "Efficy"),
            )
            if not trouble:  # the credentials work: is the CRM-profile detail the one this server has?
                wrong_detail, detail_notes = profile_detail_problems(efficy, cfg)
                wrong_size, size_notes = page_size_problems(efficy, cfg)
                trouble, more = trouble + wrong_detail + wrong_size, more + detail_notes + size_notes
        available["efficy"], problems, notes = found, problems + trouble, notes + more

    try:
        apsis = apsis_client(cfg)
    except CliError as exc:
        problems.append(missing_secret("apsis.credentials_secret", cfg.apsis.credentials_secret, exc))
    else:
        found, trouble, more = _listing(
            "APSIS One",
            [
                ("sections", apsis.list_sections, "discriminator"),
                ("keyspaces", apsis.list_keyspaces, "discriminator"),
                ("attributes", apsis.list_attributes, "discriminator"),
                ("topics", apsis.list_topics, "discriminator"),
                ("tags", apsis.list_tags, "discriminator"),
            ],
            refused("apsis.credentials_secret", cfg.apsis.credentials_secret, "APSIS One"),
            unreachable("apsis.base_url", cfg.apsis.base_url, "APSIS One"),
        )
        available["apsis"], problems, notes = found, problems + trouble, notes + more

    problems += check_references(cfg, available)
    wanted = references(cfg)
    checked = sum(len(wanted[system][kind]) for system, kinds in available.items() for kind in kinds)
    return problems, notes, checked


# ---- apply ------------------------------------------------------------------------------------------------


def applied_by(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("EFFICY_SYNC_USER"):
        return os.environ["EFFICY_SYNC_USER"]
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):  # a container without a passwd entry
        return "unknown"


def _base_urls(cfg: Any) -> list[tuple[str, str]]:
    return [("efficy.base_url", str(cfg.efficy.base_url)), ("apsis.base_url", str(cfg.apsis.base_url))]


def _port(url: str) -> int | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _other_configs(store: Any, integration_id: str) -> list[Any]:
    """The other integrations' current configs; one this CLI cannot read (a newer setting: the store's
    UnreadableConfig, a ConfigError) is left out."""
    from efficy_sync.config import ConfigError
    from efficy_sync.store.configs import UnknownIntegration

    others = []
    for other in store.list_ids():
        if other == integration_id:
            continue
        try:
            others.append(store.get(other))
        except (UnknownIntegration, ConfigError):
            continue
    return others


@cli_command
def apply_command(args: argparse.Namespace) -> int:
    from efficy_sync.config import config_to_dict, diff_configs
    from efficy_sync.config.neighbours import account_wide_deletes, duplicate_integrations, shared_profiles
    from efficy_sync.store.configs import ConfigConflict, UnknownIntegration, UnreadableConfig

    cfg, problems = load_file(args.file, from_stack=True)
    if cfg is None:
        print_problems(args.file, problems, sys.stderr)
        print("nothing stored", file=sys.stderr)
        return 1
    store = config_store()
    try:
        old, version = store.current(cfg.integration_id)
    except UnknownIntegration:
        old, version = None, 0
    except UnreadableConfig as exc:  # its changes could not be shown, nor its destination compared
        raise CliError(
            f"{exc}\nnothing stored: this efficy-sync cannot show what {args.file} changes in it; apply it with the "
            f"efficy-sync that applied version {exc.version} (or a newer one)"
        ) from None
    document: dict[str, Any] = {
        "integration_id": cfg.integration_id,
        "stored": False,
        "dry_run": bool(args.dry_run),
        "version": version,
        "previous_version": version or None,
        "changes": [],
        "full_sync_needed": False,
        "full_sync_command": None,
        "warnings": [],
    }
    if old is not None and config_to_dict(old) == config_to_dict(cfg):
        if args.output == "json":
            print(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            print(f"no changes: {cfg.integration_id} stays at version {version} (nothing stored)")
        return 0
    placeholders = [name for name, url in _base_urls(cfg) if _port(url) == 0]
    if placeholders:
        raise CliError(
            f"{args.file}: {' and '.join(placeholders)} use port 0, a placeholder (examples/demo.yaml's URLs are "
            f"filled in by the local stack), so nothing was stored; to change a stored config, start from "
            f"`efficy-sync config show {cfg.integration_id} > FILE`"
        )
    moved = moved_destination(old, cfg)
    if moved:
        raise CliError(
            f"{args.file}: {cfg.integration_id} would write to another APSIS One {' and '.join(moved)} (nothing "
            "stored): its person states say what was sent to the current one, so every later sync, full syncs "
            "included, would leave the new one half-filled. Apply this config under a new integration_id (its "
            "first full sync loads every person there), or keep the current destination"
        )
    missing = missing_secrets(cfg)
    if missing:
        listed = "".join(f"\n  {path}: secret {name!r} not found in Secrets Manager" for path, name in missing)
        raise CliError(
            f"{args.file}: the config refers to secrets that do not exist (nothing stored):{listed}\n"
            "create each (`aws secretsmanager create-secret --name NAME --secret-string ...`; the APSIS credentials "
            'as JSON {"client_id": ..., "client_secret": ...}), or correct the names, then apply again'
        )
    others = _other_configs(store, cfg.integration_id)
    clashes = shared_profiles(cfg, others)
    if clashes:
        listed = "".join(f"\n  apsis.keyspace: {line}" for line in clashes)
        raise CliError(
            f"{args.file}: persons of two CRMs would share APSIS One profiles (nothing stored):{listed}\n"
            "  one CRM's changes, deletes and opt-outs would reach the other's persons: give this integration a "
            "keyspace of its own, or an APSIS One account of its own (README, Configuration)"
        )
    deletes = account_wide_deletes(cfg, others)
    if deletes:
        listed = "".join(f"\n  {line}" for line in deletes)
        raise CliError(
            f"{args.file}: a profile delete would reach another integration's section (nothing stored):{listed}"
        )
    changes = diff_configs(old, cfg)
    needs_sync = full_sync_reasons(old, cfg)
    warning = (
        "Efficy fields, CRM profiles and queries and APSIS One attributes, topics and tags were not checked "
        f"(offline); check them with: efficy-sync config validate {args.file} --online"
    )
    document.update(
        changes=changes,
        full_sync_needed=bool(needs_sync),
        full_sync_command=f"efficy-sync full-sync start {cfg.integration_id} --follow" if needs_sync else None,
        warnings=[
            warning,
            *shared_profile_notes(cfg),
            *duplicate_integrations(cfg, others),
            *first_load_notes(old, cfg),
        ],
    )
    if args.dry_run:
        document["version"] = version + 1
        head = f"would apply {cfg.integration_id} version {version + 1} (dry run, nothing stored):"
    else:
        try:  # stored only on top of the version the changes above were shown against
            new_version = store.put(cfg, applied_by=applied_by(args.by), comment=args.comment, expected_version=version)
        except ConfigConflict as exc:
            raise CliError(
                f"{exc}; nothing stored: review what it changed (`efficy-sync config history "
                f"{cfg.integration_id}`, `efficy-sync config show {cfg.integration_id}`), keep it in {args.file} "
                "if it should stay, and apply again"
            ) from None
        document.update(stored=True, version=new_version)
        head = f"applied {cfg.integration_id} version {new_version}" + (f" (was {version}):" if version else ":")
        running = _running_full_sync(cfg.integration_id)
        if running is not None:
            document["running_full_sync"] = running
    if args.output == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    print(head)
    for line in changes:
        print(f"  {line}")
    if needs_sync:
        would = "would need" if args.dry_run else "needs"
        print(
            f"This change {would} a full sync to reach persons who do not change in Efficy ({', '.join(needs_sync)}):\n"
            f"  {document['full_sync_command']}"
        )
    running = document.get("running_full_sync")
    if running:
        print(
            f"A full sync of {cfg.integration_id} is running (run {running['run_id']}, config version "
            f"{running['config_version']}): it keeps that version's mappings, and from its next page also holds "
            "persons to this version's sync conditions (nobody this version excludes is created). Once it ends, "
            "a full sync applies the rest to everyone."
        )
    for line in document["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _running_full_sync(integration_id: str) -> dict[str, Any] | None:
    """The full sync holding the integration's lock, if any: it keeps the version it started with."""
    from efficy_sync_tools.commands.full_sync import _runs

    try:
        runs = _runs()
        lock = runs.lock(integration_id)
        run = runs.get(integration_id, lock.run_id) if lock is not None and lock.held else None
    except Exception:  # the version is stored already: a role that cannot read the runs only misses the notice
        return None
    if lock is None or not lock.held:
        return None
    version = run.config_version if run is not None else None
    return {"run_id": lock.run_id, "config_version": version}


def first_load_notes(old: IntegrationConfig | None, cfg: IntegrationConfig) -> list[str]:
    """For a new integration whose first load reads no APSIS consents for persons new to it: an account that
    already holds profiles (another connector, a migration) holds opt-outs the load would overwrite."""
    if old is not None or cfg.apsis.existing_optouts != "known_profiles" or cfg.full_sync.write_mode == "import":
        return []
    return [
        "new integration: its first full sync opts persons new to it in without reading APSIS One first; if "
        f"section {cfg.apsis.section} already holds profiles (another connector, a migration), opt-outs made there "
        "would be overwritten: set apsis.existing_optouts: always (one read per new member), or run the first load "
        f"in import mode (efficy-sync full-sync start {cfg.integration_id} --write-mode import), which never "
        "resubscribes"
    ]


def shared_profile_notes(cfg: IntegrationConfig) -> list[str]:
    """One line per CRM profile that backs several consent mappings: an opt-out of one of them is recorded but
    not written back to Efficy, since taking the person out of the profile would withdraw the others too."""
    by_profile: dict[int, list[int]] = {}
    for index, mapping in enumerate(cfg.consent_mappings):
        by_profile.setdefault(mapping.crm_profile, []).append(index)
    return [
        f"consent_mappings{indexes}: CRM profile {profile} backs {len(indexes)} subscriptions or channels; an "
        "opt-out of one is recorded (APSIS One keeps it) but not written back to Efficy, since taking the person "
        "out of the profile would withdraw the others too (alarm OptOutSharedProfileAlarm): give each its own profile"
        for profile, indexes in sorted(by_profile.items())
        if len(indexes) > 1
    ]


#: the parts of a config whose change alters what every person should look like in APSIS One
FULL_SYNC_PARTS = {
    "sync_conditions": "sync conditions",
    "field_mappings": "field mappings",
    "consent_mappings": "consent mappings",
    "tags": "tag mappings",
}


def moved_destination(old: IntegrationConfig | None, new: IntegrationConfig) -> list[str]:
    """What of the APSIS One destination (account, section, keyspace) `new` changes on an existing integration.
    A person's state is kept per integration and person, not per destination: diffs against it would send the
    new section only what changes from then on."""
    if old is None:
        return []
    parts = {"account": "base_url", "section": "section", "keyspace": "keyspace"}
    return [name for name, field in parts.items() if getattr(old.apsis, field) != getattr(new.apsis, field)]


def full_sync_reasons(old: IntegrationConfig | None, new: IntegrationConfig) -> list[str]:
    """Why the persons already in APSIS One must be synced again after `new` replaces `old` (empty: no need).

    Real-time sync only reaches a person when Efficy reports a change of theirs, so a new condition or mapping
    stays unapplied to everyone else until a full sync runs."""
    from efficy_sync.config import config_to_dict

    if old is None:
        return ["a new integration: the first full sync loads every person"]
    before, after = config_to_dict(old), config_to_dict(new)
    return [label for part, label in FULL_SYNC_PARTS.items() if before.get(part) != after.get(part)]


def secret_references(cfg: IntegrationConfig) -> list[tuple[str, str]]:
    """(config path, secret name) of every secret the integration reads at run time."""
    return [
        ("efficy.api_key_secret", cfg.efficy.api_key_secret),
        ("efficy.webhook_secret_secret", cfg.efficy.webhook_secret_secret),
        ("apsis.credentials_secret", cfg.apsis.credentials_secret),
        ("apsis.optout_token_secret", cfg.apsis.optout_token_secret),
    ]


def missing_secrets(cfg: IntegrationConfig) -> list[tuple[str, str]]:
    """The referenced secrets Secrets Manager does not have (DescribeSecret: the values are never read)."""
    from botocore.exceptions import ClientError
    from efficy_sync.aws import client

    sm = client("secretsmanager")
    missing = []
    for path, name in secret_references(cfg):
        try:
            sm.describe_secret(SecretId=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            missing.append((path, name))
    return missing


# ---- show, history, schema --------------------------------------------------------------------------------


@cli_command
def show_command(args: argparse.Namespace) -> int:
    from efficy_sync.config import config_to_dict, config_to_yaml
    from efficy_sync.store.configs import UnknownIntegration

    store = config_store()
    try:
        if args.version is None:
            cfg = store.get(args.integration_id)
        else:
            cfg = store.version(args.integration_id, args.version)
    except UnknownIntegration:
        what = f" (or no version {args.version} of it)" if args.version is not None else ""
        raise unknown_integration(store, args.integration_id, what) from None
    if getattr(args, "webhook_url", False):
        return _print_registration(cfg, as_json=args.output == "json" or args.format == "json")
    automatic = automatic_mappings(cfg)
    if getattr(args, "effective", False):  # every setting, defaults included: to read, not to apply back
        if args.format == "yaml":  # asked for by name: --effective alone stays the JSON scripts read
            sys.stdout.write(
                "# every setting, defaults included: to read, not to apply back (it would pin every default)\n"
                + config_to_yaml(cfg)
            )
        else:
            sys.stdout.write(json.dumps(config_to_dict(cfg), indent=2, ensure_ascii=False) + "\n")
        return 0
    if args.format == "json":
        sys.stdout.write(json.dumps(config_to_dict(cfg, only_set=True), indent=2, ensure_ascii=False) + "\n")
        # stdout stays what `config apply` takes back; the automatic mappings go beside it
        for line in automatic:
            print(f"automatic mapping: {line}", file=sys.stderr)
    else:
        header = "".join(f"#   {line}\n" for line in automatic)
        sys.stdout.write(
            f"# automatic mappings (always on; not part of the file):\n{header}"
            "# settings not set here take their defaults (`config show --effective` lists them all)\n"
            + config_to_yaml(cfg, only_set=True)
        )
    return 0


def webhook_registration(cfg: IntegrationConfig, api_url: str, webhook_secret: str) -> dict[str, Any]:
    """What the administrator registers in Efficy (Designer -> Webhooks, or the 12.1 generic connector) for this
    integration, per `efficy.auth.mode` (webhook_auth.verify checks exactly this): the URL, with the secret as its
    `token` parameter in `url_token` mode, else the header(s) Efficy must send."""
    from urllib.parse import quote

    from efficy_sync.webhook_auth import URL_TOKEN_PARAMETER

    auth = cfg.efficy.auth
    url = f"{api_url.rstrip('/')}/integrations/{cfg.integration_id}/efficy/webhook"
    doc: dict[str, Any] = {
        "integration_id": cfg.integration_id,
        "mode": auth.mode,
        "method": "POST",
        "url": url,
        "headers": {},
        "secret": webhook_secret,
        "secret_name": cfg.efficy.webhook_secret_secret,
    }
    if auth.mode == "url_token":
        doc["url"] = f"{url}?{URL_TOKEN_PARAMETER}={quote(webhook_secret, safe='')}"
        doc["note"] = "no header: the token in the URL is the authentication (Efficy's SYS_WEBHOOKS are unsigned)"
    elif auth.mode == "header":
        doc["headers"] = {auth.secret_header: webhook_secret}
        doc["note"] = "a static header carrying the webhook secret on every call"
    elif auth.mode == "hmac_body":
        doc["headers"] = {auth.signature_header: "sha256=<hex HMAC-SHA256(secret, raw body)>"}
        doc["note"] = "the sender signs the raw body with the secret (the Efficy 12.1 generic connector)"
    else:
        doc["headers"] = {
            auth.timestamp_header: "<unix seconds>",
            auth.signature_header: 'sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>',
        }
        doc["note"] = f"our timestamped scheme: the timestamp must be within {auth.tolerance_seconds}s of now"
    return doc


def _print_registration(cfg: IntegrationConfig, *, as_json: bool) -> int:
    from efficy_sync_tools.commands._aws import secret, stack_output

    doc = webhook_registration(cfg, stack_output("ApiUrl"), secret(cfg.efficy.webhook_secret_secret))
    print("efficy-sync: this shows the webhook secret; keep it out of tickets and chats", file=sys.stderr)
    if as_json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(f"Register in Efficy for {cfg.integration_id} (efficy.auth.mode: {doc['mode']}):")
    print(f"  {doc['method']} {doc['url']}")
    if doc["headers"]:
        for name, value in doc["headers"].items():
            print(f"  header {name}: {value}")
    else:
        print("  no header")
    if cfg.efficy.auth.mode in ("hmac_body", "hmac"):
        print(f"  signing secret: {doc['secret']}")
    print(f"  ({doc['note']}; the secret is {doc['secret_name']} in Secrets Manager)")
    return 0


def automatic_mappings(cfg: IntegrationConfig) -> list[str]:
    """What mapping.py maps without a field_mappings entry (config.py forbids mapping these by hand)."""
    from efficy_sync.config import CRMID_ATTRIBUTE, EMAIL_ATTRIBUTE, EMAIL_FIELD, KEY_FIELD

    return [
        f"{EMAIL_FIELD} -> {EMAIL_ATTRIBUTE} (type email)",
        f"{KEY_FIELD} -> the profile key in keyspace {cfg.apsis.keyspace}, and {CRMID_ATTRIBUTE}",
    ]


@cli_command
def list_command(args: argparse.Namespace) -> int:
    store = config_store()
    rows = []
    for integration_id in sorted(store.list_ids()):
        versions = sorted(store.history(integration_id), key=lambda v: v["version"])
        if not versions:
            continue
        latest = versions[-1]
        rows.append(
            {
                "integration_id": integration_id,
                "version": latest["version"],
                "applied_at": latest["applied_at"],
                "applied_by": latest["applied_by"],
            }
        )
    if args.output == "json":
        print(json.dumps({"integrations": rows}, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("No integration is configured yet (use `efficy-sync config apply FILE`).")
        return 0
    width = max(len("INTEGRATION"), *(len(r["integration_id"]) for r in rows))
    print(f"{'INTEGRATION':<{width}}  VERSION  {'APPLIED AT':<25}  APPLIED BY")
    for r in rows:
        print(f"{r['integration_id']:<{width}}  {r['version']:>7}  {r['applied_at']:<25}  {r['applied_by']}")
    return 0


@cli_command
def history_command(args: argparse.Namespace) -> int:
    store = config_store()
    versions = store.history(args.integration_id)
    if not versions:
        raise unknown_integration(store, args.integration_id)
    versions.sort(key=lambda v: v["version"])
    if args.format == "json":
        print(json.dumps(versions, indent=2))
        return 0
    current = versions[-1]["version"]
    by_width = max(len("APPLIED BY"), *(len(v["applied_by"]) for v in versions))
    print(f"  VERSION  {'APPLIED AT':<25}  {'APPLIED BY':<{by_width}}  COMMENT")
    for v in versions:
        mark = "*" if v["version"] == current else " "
        print(
            f"{mark} {v['version']:>7}  {v['applied_at']:<25}  {v['applied_by']:<{by_width}}  {v['comment']}".rstrip()
        )
    print(f"(* current: version {current})")
    return 0


@cli_command
def schema_command(args: argparse.Namespace) -> int:
    from efficy_sync.config import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote the JSON Schema to {args.out}", file=sys.stderr)
    return 0
