"""IAM on the local stack: each function's AWS calls are checked against its own role, as deployed from
template.yaml, and refused as AWS refuses them (AccessDenied, from the client, before any request is sent).

Why: every handler runs in the stack's one process with the stack's one set of credentials, so a role that
lacked a permission passed every local test and failed on AWS. That hid a real defect: the cleanup function's
sweep runs the scheduled query tags, but its role could read neither the config table nor the secrets, and the
sweep turns an error into a warning, so nothing showed. Now such a call fails locally too, the denial is logged
(`IAM (local): denied ...`), and the tests fail on any denial in their stack's log (tests/conftest.py).

What is checked: the Allow and Deny statements of the role's inline policies (the SAM policy templates and the
template's own statements, as moto's CloudFormation resolved them): Action / NotAction and Resource /
NotResource with IAM's `*` and `?` wildcards. Conditions are not evaluated (a statement with one counts as
matching). The resource of a call is derived from its parameters (`resources_of`: DynamoDB tables and indexes,
SQS queues, Step Functions machines and executions, S3 objects and buckets, secrets, SSM parameters); a call of
another service is checked against Resource "*". Only calls made inside a function's invocation are checked
(the router's `function_scope`, carried into the threads the code starts with `contextvars`): the stack's own
pollers, the CLI and the tests act as the admin, not as a function. Managed policies (logs, X-Ray) are not read:
our code calls neither.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

log = logging.getLogger("efficy_sync.local")
#: decisions remembered per Enforcer at most (then forgotten all at once)
MAX_DECISIONS = 4096

ACCOUNT = "123456789012"  # moto's account
DENIED_MARK = "IAM (local): denied"

#: API operations IAM authorises under another action's name
_ACTION_ALIASES = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
}
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@cache
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    body = re.escape(text).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(f"^{body}$", re.IGNORECASE if ignore_case else 0)


def _matches(patterns: Any, value: str, *, ignore_case: bool = False) -> bool:
    items = patterns if isinstance(patterns, list) else [patterns]
    return any(_pattern(str(p), ignore_case).match(value) for p in items)


def _statement_matches(statement: dict[str, Any], action: str, resource: str) -> bool:
    if "Action" in statement and not _matches(statement["Action"], action, ignore_case=True):
        return False
    if "NotAction" in statement and _matches(statement["NotAction"], action, ignore_case=True):
        return False
    if "Resource" in statement and not _matches(statement["Resource"], resource):
        return False
    return not ("NotResource" in statement and _matches(statement["NotResource"], resource))


def allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """IAM's evaluation of one identity's policies: an explicit Deny wins, else an Allow is needed."""
    matching = [s for s in statements if _statement_matches(s, action, resource)]
    if any(s.get("Effect") == "Deny" for s in matching):
        return False
    return any(s.get("Effect") == "Allow" for s in matching)


def resources_of(prefix: str, operation: str, params: dict[str, Any], region: str) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) pairs one API call needs; several for batch and transaction calls."""
    action = _ACTION_ALIASES.get(f"{prefix}:{operation}", f"{prefix}:{operation}")
    if prefix == "dynamodb":
        return _dynamodb(action, operation, params, region)
    if prefix == "sqs":
        if "QueueUrl" in params:
            return [
                (action, f"arn:aws:sqs:{region}:{ACCOUNT}:{str(params['QueueUrl']).rstrip('/').rsplit('/', 1)[-1]}")
            ]
        if "QueueName" in params:
            return [(action, f"arn:aws:sqs:{region}:{ACCOUNT}:{params['QueueName']}")]
    if prefix == "states":
        arn = params.get("executionArn") or params.get("stateMachineArn")
        if arn:
            return [(action, str(arn))]
    if prefix == "s3" and "Bucket" in params:
        if action == "s3:ListBucket" or "Key" not in params:
            return [(action, f"arn:aws:s3:::{params['Bucket']}")]
        return [(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}")]
    if prefix == "secretsmanager" and "SecretId" in params:
        secret = str(params["SecretId"])
        arn = (
            secret if secret.startswith("arn:") else f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{secret}-AbCdEf"
        )
        return [(action, arn)]
    if prefix == "ssm" and ("Name" in params or "Names" in params):
        names = params.get("Names") or [params["Name"]]
        return [(action, f"arn:aws:ssm:{region}:{ACCOUNT}:parameter/{str(n).lstrip('/')}") for n in names]
    return [(action, "*")]


def _dynamodb(action: str, operation: str, params: dict[str, Any], region: str) -> list[tuple[str, str]]:
    def table(name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"
        return f"{arn}/index/{index}" if index else arn

    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [(action, table(name)) for name in params.get("RequestItems", {})]
    if operation == "TransactWriteItems":
        pairs = []
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                pairs.append((f"dynamodb:{_TRANSACT_ACTIONS.get(kind, kind)}", table(body["TableName"])))
        return pairs
    if operation == "TransactGetItems":
        return [("dynamodb:GetItem", table(item["Get"]["TableName"])) for item in params.get("TransactItems", [])]
    if "TableName" in params:
        return [(action, table(params["TableName"], params.get("IndexName")))]
    return [(action, "*")]


def role_statements(iam: Any, role_name: str) -> list[dict[str, Any]]:
    """The statements of a role's inline policies (moto hands a policy back as a Python literal or JSON)."""
    statements: list[dict[str, Any]] = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            document = ast.literal_eval(document)
        found = document.get("Statement", [])
        statements.extend(found if isinstance(found, list) else [found])
    return statements


class Enforcer:
    """Checks the calls of the function in scope against its role; `denied` keeps what it refused."""

    def __init__(
        self,
        statements: dict[str, list[dict[str, Any]]],
        region: str,
        scope: Callable[[], str | None],
        rename: Callable[[str], str] = lambda arn: arn,
    ) -> None:
        self.statements = statements  # function logical id -> its role's statements
        self.region = region
        self.scope = scope
        self.rename = rename  # the executable copy of a state machine -> the one the template declares
        self.denied: list[str] = []
        #: (function, action, resource) -> allowed: a page's 50-item transaction names one table 50 times, and a
        #: full sync repeats the same few pairs thousands of times (the policies do not change while a stack runs)
        self._decisions: dict[tuple[str, str, str], bool] = {}

    def refusal(self, prefix: str, operation: str, params: dict[str, Any]) -> str | None:
        """Why the function in scope may not make this call, or None (allowed, or not a function's call)."""
        function = self.scope()
        if function is None or function not in self.statements:
            return None
        for action, resource in dict.fromkeys(resources_of(prefix, operation, params, self.region)):
            resource = self.rename(resource)
            key = (function, action, resource)
            decision = self._decisions.get(key)
            if decision is None:
                if len(self._decisions) >= MAX_DECISIONS:  # object keys and execution ARNs are unbounded
                    self._decisions.clear()
                decision = self._decisions[key] = allowed(self.statements[function], action, resource)
            if not decision:
                return f"{DENIED_MARK} {function} may not {action} on {resource}"
        return None

    def install(self, events: Any) -> None:
        """Registers on a botocore event emitter (a session's: every client it creates afterwards inherits it)."""
        events.register("before-parameter-build", self._check)
        events.register("before-call", self._refuse)

    def _check(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        prefix = model.service_model.endpoint_prefix
        reason = self.refusal(prefix, model.name, params)
        if reason is not None:
            context["local_iam_denied"] = (reason, prefix)

    def _refuse(self, context: dict[str, Any], **_: Any) -> Any:
        found = context.get("local_iam_denied")
        if found is None:
            return None
        from botocore.awsrequest import AWSResponse

        reason, prefix = found
        self.denied.append(reason)
        log.error("%s", reason)
        code = "AccessDenied" if prefix in ("sqs", "s3") else "AccessDeniedException"
        parsed = {"Error": {"Code": code, "Message": reason}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("", 400, {}, None), parsed


def build(
    iam: Any, roles: dict[str, str], region: str, scope: Callable[[], str | None], machines: Iterable[tuple[str, str]]
) -> Enforcer:
    """`roles`: function logical id -> role name; `machines`: (declared ARN, executable copy ARN) pairs."""
    renames = [(copy.rsplit(":", 1)[-1], declared.rsplit(":", 1)[-1]) for declared, copy in machines]

    def rename(arn: str) -> str:
        if arn.startswith("arn:aws:states:"):
            for copy_name, declared_name in renames:
                arn = arn.replace(f":stateMachine:{copy_name}", f":stateMachine:{declared_name}")
                arn = arn.replace(f":execution:{copy_name}:", f":execution:{declared_name}:")
        return arn

    statements = {function: role_statements(iam, role) for function, role in roles.items()}
    return Enforcer(statements, region, scope, rename)
