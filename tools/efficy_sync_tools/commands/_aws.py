"""Where the CLI finds the deployed product, and how a command reports a user error.

Names come from the CloudFormation stack (EFFICY_SYNC_STACK, default "efficy-sync"): its outputs, or, when an
output is missing, the resource the output is named after; the local stack is deployed from template.yaml
with the same names and outputs, so nothing else is needed there either. The environment (CONFIG_TABLE,
STATE_TABLE, ...) still wins, for a stack the caller may not describe. AWS itself is reached through boto3's
standard environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL) or the global --profile / --region.

A user error (missing file, unknown integration, AWS or an API out of reach) is one line on stderr and a
non-zero exit: `cli_command` wraps a command function for that. Heavy imports stay inside functions so
`efficy-sync --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from efficy_sync.clients.apsis import ApsisClient
    from efficy_sync.clients.efficy import EfficyClient
    from efficy_sync.clients.http import RetryPolicy
    from efficy_sync.config import IntegrationConfig
    from efficy_sync.store.token_refusals import TokenRefusals

DEFAULT_STACK = "efficy-sync"

# ---- exit codes (README "Exit codes"); 2 is argparse's usage error, so no command uses it for anything else --
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is "no": invalid config, failed run, unknown name, missing secret
EXIT_USAGE = 2  # argparse: unknown option, missing argument
EXIT_REFUSED = 3  # refused because of what runs now: a full sync of the integration is already running
EXIT_UNREACHABLE = 4  # AWS, Efficy or APSIS One out of reach, or no usable AWS credentials / region
EXIT_HALTED = 5  # a full sync halted by the blast-radius breaker (nothing removed; confirm its counts)
#: the command ran and found what an operator must look at: reconcile's drift not repaired, health's failing
#: persons or dead-letter messages (a scheduled script alerts on the code alone)
EXIT_FOUND = 6
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_PIPE_CLOSED = 141  # the reader of stdout went away (`| head`): 128 + SIGPIPE, as a shell reports it
EXIT_CODES_HELP = (
    "exit codes: 0 done; 1 failed (invalid config, failed run, unknown name, missing secret); 2 usage error;\n"
    "            3 refused (a full sync of the integration is already running); 4 AWS, Efficy or APSIS One\n"
    "            out of reach, or no AWS credentials / region; 5 full sync halted by the blast-radius\n"
    "            breaker (confirm with --allow-removals-up-to N); 6 found problems: drift found by reconcile\n"
    "            and not repaired (no --fix, or persons --fix left: run it again), failing persons or\n"
    "            dead-letter messages found by health;\n"
    "            130 interrupted; 141 stdout closed by its reader (| head)"
)

#: environment variable of the efficy_sync library -> stack output that holds its value
LIBRARY_ENV: dict[str, str] = {
    "CONFIG_TABLE": "ConfigTableName",
    "STATE_TABLE": "StateTableName",
    "CONTACT_QUEUE_URL": "ContactChangesQueueUrl",
    "OPTOUT_QUEUE_URL": "OptOutQueueUrl",
    "STATE_MACHINE_ARN": "FullSyncStateMachineArn",
    "PAGES_BUCKET": "PagesBucketName",
    "APSIS_TOKEN_PARAMETER_PREFIX": "ApsisTokenParameterPrefix",
}
#: what efficy_sync.settings cannot do without
REQUIRED_LIBRARY_ENV = ("CONFIG_TABLE", "STATE_TABLE", "CONTACT_QUEUE_URL")

_OUTPUT_SUFFIXES = ("Name", "Url", "Arn")


class CliError(Exception):
    """A problem the user can fix; printed as one line on stderr, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class MissingSecret(CliError):
    """Secrets Manager has no secret of that name."""


def fail(message: str, code: int = EXIT_FAILED) -> int:
    """Prints a user error the way every command does; returns the exit code."""
    print(f"efficy-sync: {message}", file=sys.stderr, flush=True)
    return code


def honour_aws_region() -> None:
    """DESIGN §5 promises AWS_REGION; boto3 itself reads only AWS_DEFAULT_REGION (or the profile's region)."""
    if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]


def cli_command(func: Callable[[Any], int]) -> Callable[[Any], int]:
    """Wraps a command function: AWS_REGION honoured, and CliError and the usual AWS / API failures turned into
    one line on stderr and the exit code of their kind (a genuine bug still shows its traceback)."""

    @functools.wraps(func)
    def wrapper(args: Any) -> int:
        honour_aws_region()
        try:
            return func(args)
        except BrokenPipeError:
            raise  # the reader went away: main ends quietly, not with "[Errno 32]" and exit 1
        except CliError as exc:
            return fail(str(exc), exc.code)
        except Exception as exc:
            message = describe_error(exc)
            if message is None:
                raise
            return fail(message, error_exit_code(exc))

    return wrapper


def error_exit_code(exc: BaseException) -> int:
    """EXIT_UNREACHABLE for what the environment must fix (no region, credentials or connection, an API down),
    EXIT_FAILED otherwise."""
    from botocore import exceptions as boto_errors
    from efficy_sync.clients.errors import TransientError

    unreachable = (
        boto_errors.NoRegionError,
        boto_errors.NoCredentialsError,
        boto_errors.PartialCredentialsError,
        boto_errors.EndpointConnectionError,
        boto_errors.ConnectionError,
        boto_errors.ProfileNotFound,
        TransientError,
    )
    return EXIT_UNREACHABLE if isinstance(exc, unreachable) else EXIT_FAILED


def describe_error(exc: BaseException) -> str | None:
    """One line for an error a user can act on (a stored config this CLI cannot read: with its problems, one a
    line), or None for a bug."""
    from botocore import exceptions as boto_errors
    from efficy_sync.clients.errors import ApiError, AuthError
    from efficy_sync.store.configs import UnreadableConfig

    if isinstance(exc, UnreadableConfig):  # every command that reads a stored version: show, explain, reconcile, ...
        return (
            f"{exc}\nuse the efficy-sync that applied it (or a newer one); `efficy-sync config history "
            f"{exc.integration_id}` says who applied which version"
        )
    if isinstance(exc, boto_errors.NoRegionError):
        return "no AWS region: set AWS_REGION or --region (or a profile with a region)"
    if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
        return f"no usable AWS credentials: {exc} (set AWS_PROFILE or --profile, or the AWS_* variables)"
    if isinstance(exc, boto_errors.ProfileNotFound):
        return f"{exc} (check --profile / AWS_PROFILE)"
    if isinstance(exc, boto_errors.EndpointConnectionError | boto_errors.ConnectionError):
        return f"cannot reach AWS: {exc}{_endpoint_hint()}"
    if isinstance(exc, boto_errors.ClientError):
        error = exc.response.get("Error", {})
        code, text = error.get("Code", "error"), error.get("Message", "")
        hint = ""
        if code == "ResourceNotFoundException" and exc.operation_name in (
            "GetItem",
            "Query",
            "Scan",
            "TransactWriteItems",
        ):
            hint = " (check CONFIG_TABLE / STATE_TABLE, or EFFICY_SYNC_STACK)"
        return f"AWS {exc.operation_name} failed: {code}: {text}{hint}"
    if isinstance(exc, boto_errors.BotoCoreError):
        return f"AWS: {exc}"
    if isinstance(exc, AuthError):  # a fresh token or key did not help: the secret's credentials are refused
        return (
            f"{exc} [{exc.category}]: the API refused the integration's credentials; correct them in the secret its "
            "config names (`efficy-sync config validate FILE --online` checks them)"
        )
    if isinstance(exc, ApiError):
        return f"{exc} [{exc.category}]"
    if isinstance(exc, OSError):
        return str(exc)
    return None


def _endpoint_hint() -> str:
    """What to do when AWS_ENDPOINT_URL names an endpoint that does not answer: on this machine it is the local
    stack (README: `local up`), which is not running; elsewhere, the variable may be a leftover."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return ""
    if (urlsplit(endpoint).hostname or "") in ("127.0.0.1", "localhost", "::1"):
        return (
            " (AWS_ENDPOINT_URL): the local stack is not running there; start it with "
            "`efficy-sync local up --ready-file .ready.json` and export its aws_endpoint"
        )
    return " (AWS_ENDPOINT_URL): check that endpoint, or unset AWS_ENDPOINT_URL to use AWS itself"


# ---- names of the deployed resources ----------------------------------------------------------------------


def stack_name() -> str:
    return os.environ.get("EFFICY_SYNC_STACK") or DEFAULT_STACK


def _describe_stack(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(outputs, logical id -> physical id) of the stack, read once per process and AWS endpoint.

    The endpoint and region are part of the cache's key: a process that reads one stack and is then pointed at
    another endpoint (the test suite runs commands in-process against a local stack, then against moto in the
    same process) read the first stack's queue URLs for the second (CI, stop 43: health asked the in-process moto
    for a queue that only the local stack had)."""
    from efficy_sync.aws import client

    cfn = client("cloudformation")
    return _described(name, cfn.meta.region_name, cfn.meta.endpoint_url)


@functools.cache
def _described(name: str, region: str, endpoint: str) -> tuple[dict[str, str], dict[str, str]]:
    from botocore.exceptions import ClientError
    from efficy_sync.aws import client

    cfn = client("cloudformation")
    try:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") != "ValidationError":
            raise
        message = str(error.get("Message", ""))
        if "does not exist" in message:  # CloudFormation: "Stack with id NAME does not exist"
            raise CliError(
                f"CloudFormation stack {name!r} not found in region {region}: check --region / AWS_REGION, or set "
                "EFFICY_SYNC_STACK, or CONFIG_TABLE and STATE_TABLE"
            ) from None
        # another refusal (a malformed name, say) said "not found" too and sent the admin looking elsewhere
        raise CliError(f"CloudFormation refused to describe stack {name!r}: {message}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    resources: dict[str, str] = {}
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=name):
        for resource in page.get("StackResourceSummaries", []):
            if resource.get("PhysicalResourceId"):
                resources[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
    return outputs, resources


def _logical_id(output: str) -> str:
    """ConfigTableName -> ConfigTable: the template names each output after its resource."""
    for suffix in _OUTPUT_SUFFIXES:
        if output.endswith(suffix) and len(output) > len(suffix):
            return output[: -len(suffix)]
    return output


def stack_output(name: str) -> str:
    """The value of output `name` of the product's stack; raises CliError when there is none."""
    stack = stack_name()
    outputs, resources = _describe_stack(stack)
    if outputs.get(name):
        return outputs[name]
    physical = resources.get(_logical_id(name))
    if physical:
        return physical
    raise CliError(f"stack {stack!r} has no output {name}")


def secrets_prefix(*, from_stack: bool) -> str:
    """The stack's SecretsPrefix, which every secret name must start with: the stack's output when `from_stack`
    (what the functions' IAM policies allow wins over anything set here), else EFFICY_SYNC_SECRETS_PREFIX, else
    the template's default (also a stack deployed before the output existed)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from efficy_sync.config import DEFAULT_SECRETS_PREFIX

    if from_stack:
        table = os.environ.get("CONFIG_TABLE")
        try:
            outputs, resources = _describe_stack(stack_name())
        except CliError:  # no stack: the tables were named in the environment
            outputs = resources = None
        except (ClientError, BotoCoreError):
            if not table:
                raise
            outputs = resources = None  # a role with the tables only (no DescribeStacks): as before the output
        # the stack is the one whose tables we use: named explicitly, or the default one when no table is named
        # (CONFIG_TABLE may name another stack's table while a default-named stack exists in the account)
        ours = outputs is not None and (
            bool(os.environ.get("EFFICY_SYNC_STACK"))
            or not table
            or table in (outputs.get("ConfigTableName"), (resources or {}).get("ConfigTable"))
        )
        if ours and outputs is not None:
            # a stack deployed before the output existed: its IAM policies allowed the default prefix only
            return outputs.get("SecretsPrefix") or DEFAULT_SECRETS_PREFIX
    return os.environ.get("EFFICY_SYNC_SECRETS_PREFIX") or DEFAULT_SECRETS_PREFIX


def table_names() -> tuple[str, str]:
    """(config table, state table): CONFIG_TABLE / STATE_TABLE, else the stack's outputs."""
    config = os.environ.get("CONFIG_TABLE") or stack_output("ConfigTableName")
    state = os.environ.get("STATE_TABLE") or stack_output("StateTableName")
    return config, state


def setup_library_env() -> None:
    """Fills CONFIG_TABLE, STATE_TABLE, CONTACT_QUEUE_URL, ... from the stack where the environment lacks them,
    so efficy_sync.settings (and code built on it) works inside the CLI. Optional ones the stack cannot give
    are left unset; a required one raises CliError."""
    for variable, output in LIBRARY_ENV.items():
        if os.environ.get(variable):
            continue
        try:
            os.environ[variable] = stack_output(output)
        except Exception:  # no stack, no permission: only a required one is worth stopping for
            if variable in REQUIRED_LIBRARY_ENV:
                raise
    from efficy_sync import settings

    settings.settings.cache_clear()


# ---- secrets and API clients ------------------------------------------------------------------------------


def secret(name: str) -> str:
    """A secret's value by name; CliError when Secrets Manager does not have it. Never print the value."""
    from botocore.exceptions import ClientError
    from efficy_sync.aws import client

    try:
        return client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise MissingSecret(
                f"secret {name!r} not found in Secrets Manager: create it (`aws secretsmanager create-secret "
                f"--name {name} --secret-string ...`), or name an existing one in the config and apply it again"
            ) from None
        raise


def cli_retry_policy() -> RetryPolicy:
    """A person at a terminal waits: fewer, shorter retries than the workers use."""
    from efficy_sync.clients.http import RetryPolicy

    return RetryPolicy(total=2, backoff_factor=0.2, backoff_max=2.0, connect_timeout=5.0, read_timeout=30.0)


def efficy_client(cfg: IntegrationConfig) -> EfficyClient:
    """The integration's Efficy client (the shared factory: every setting of its config), API key from Secrets
    Manager."""
    from efficy_sync.clients.efficy import EfficyClient

    return EfficyClient.from_config(cfg, api_key=secret(cfg.efficy.api_key_secret), policy=cli_retry_policy())


def apsis_credentials(name: str) -> tuple[str, str]:
    """(client_id, client_secret) from a JSON secret; CliError when it has not that shape."""
    try:
        creds = json.loads(secret(name))
        # as the client sends them (whitespace of a secret put from a file dropped): the token store and the
        # refusal record below are keyed by them, as the functions key theirs
        return str(creds["client_id"]).strip(), str(creds["client_secret"]).strip()
    except (ValueError, TypeError, KeyError):
        raise CliError(f"secret {name!r} is not JSON with client_id and client_secret") from None


def apsis_client(cfg: IntegrationConfig) -> ApsisClient:
    """The integration's APSIS One client (the shared factory: every setting of its config, the tags path
    included), with its OAuth client credentials from Secrets Manager."""
    from efficy_sync.apsis_tokens import token_store
    from efficy_sync.clients.apsis import ApsisClient

    client_id, client_secret = apsis_credentials(cfg.apsis.credentials_secret)
    credentials = {"client_id": client_id, "client_secret": client_secret}
    store = token_store(token_prefix(), cfg.apsis.base_url, client_id)
    client = ApsisClient.from_config(cfg, credentials=credentials, policy=cli_retry_policy(), token_store=store)
    client.token_hold.share(token_refusals(cfg.apsis.base_url, client_id, client_secret))
    return client


def token_refusals(base_url: str, client_id: str, client_secret: str) -> TokenRefusals | None:
    """Where the stack holds a refused APSIS token request for every container (efficy_sync/store/token_refusals.py):
    a command with revoked credentials does not spend the account's 10 token requests a minute either, and one
    the functions were refused waits as they do. None (held for this command alone) when the stack cannot say;
    an admin without GetItem/PutItem on the state table gets a warning, and the command asks as before."""
    from efficy_sync.budget import account_key
    from efficy_sync.store.token_refusals import TokenRefusals

    try:
        table = table_names()[1]
    except Exception:  # no stack, no permission
        return None
    return TokenRefusals(table, account_key(base_url, client_id), client_id, client_secret)


def token_prefix() -> str:
    """Where the stack shares APSIS tokens (efficy_sync/apsis_tokens.py): each command used to ask APSIS for
    its own, and APSIS allows 10 a minute per account. "" (no sharing) when the stack cannot say."""
    try:
        return os.environ.get("APSIS_TOKEN_PARAMETER_PREFIX") or stack_output("ApsisTokenParameterPrefix")
    except Exception:  # no stack, no permission: the command fetches a token of its own
        return ""
