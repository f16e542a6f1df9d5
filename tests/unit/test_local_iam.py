"""The local stack's IAM check (tools: local/iam.py): IAM's evaluation of a role's statements, and the resource
each kind of call needs. The end-to-end proof is the stack itself: tests/conftest.py fails a test on any
refusal logged while it ran."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync_tools.local.iam import ACCOUNT, DENIED_MARK, Enforcer, allowed, resources_of

R = "eu-west-1"
TABLE = f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/efficy-sync-StateTable-X"
CRUD = {
    "Effect": "Allow",
    "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"],
    "Resource": [TABLE, f"{TABLE}/index/*"],
}
SECRETS = {
    "Effect": "Allow",
    "Action": "secretsmanager:GetSecretValue",
    "Resource": f"arn:aws:secretsmanager:{R}:{ACCOUNT}:secret:efficy-sync/*/apsis-??????",
}


def test_an_allow_needs_both_the_action_and_the_resource() -> None:
    assert allowed([CRUD], "dynamodb:GetItem", TABLE)
    assert allowed([CRUD], "DynamoDB:getitem", TABLE)  # actions ignore case
    assert not allowed([CRUD], "dynamodb:Scan", TABLE)
    assert not allowed([CRUD], "dynamodb:GetItem", TABLE.replace("StateTable", "ConfigTable"))
    assert allowed([CRUD], "dynamodb:Query", f"{TABLE}/index/health")
    assert not allowed([], "dynamodb:GetItem", TABLE)


def test_an_explicit_deny_wins_and_not_action_and_not_resource_exclude() -> None:
    deny = {"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"}
    assert not allowed([CRUD, deny], "dynamodb:GetItem", TABLE)
    everything_but = {"Effect": "Allow", "NotAction": "dynamodb:DeleteItem", "NotResource": f"{TABLE}/index/*"}
    assert allowed([everything_but], "dynamodb:GetItem", TABLE)
    assert not allowed([everything_but], "dynamodb:DeleteItem", TABLE)
    assert not allowed([everything_but], "dynamodb:Query", f"{TABLE}/index/health")


def test_a_question_mark_is_one_character() -> None:
    name = f"arn:aws:secretsmanager:{R}:{ACCOUNT}:secret:efficy-sync/acme/apsis-"
    assert allowed([SECRETS], "secretsmanager:GetSecretValue", name + "AbCdEf")
    assert not allowed([SECRETS], "secretsmanager:GetSecretValue", name + "AbCdE")
    assert not allowed([SECRETS], "secretsmanager:GetSecretValue", name.replace("/apsis-", "/apsis-optout-") + "AbCdEf")


@pytest.mark.parametrize(
    ("prefix", "operation", "params", "expected"),
    [
        ("dynamodb", "GetItem", {"TableName": "T"}, [("dynamodb:GetItem", f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/T")]),
        (
            "dynamodb",
            "Query",
            {"TableName": "T", "IndexName": "health"},
            [("dynamodb:Query", f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/T/index/health")],
        ),
        (
            "dynamodb",
            "BatchWriteItem",
            {"RequestItems": {"A": [], "B": []}},
            [
                ("dynamodb:BatchWriteItem", f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/A"),
                ("dynamodb:BatchWriteItem", f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/B"),
            ],
        ),
        (
            "dynamodb",
            "TransactWriteItems",
            {"TransactItems": [{"Put": {"TableName": "A"}}, {"ConditionCheck": {"TableName": "B"}}]},
            [
                ("dynamodb:PutItem", f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/A"),
                ("dynamodb:ConditionCheckItem", f"arn:aws:dynamodb:{R}:{ACCOUNT}:table/B"),
            ],
        ),
        (
            "sqs",
            "SendMessageBatch",
            {"QueueUrl": f"http://127.0.0.1:5000/{ACCOUNT}/q.fifo"},
            [("sqs:SendMessage", f"arn:aws:sqs:{R}:{ACCOUNT}:q.fifo")],
        ),
        ("s3", "GetObject", {"Bucket": "b", "Key": "k/1.json"}, [("s3:GetObject", "arn:aws:s3:::b/k/1.json")]),
        ("s3", "ListObjectsV2", {"Bucket": "b"}, [("s3:ListBucket", "arn:aws:s3:::b")]),
        (
            "secretsmanager",
            "GetSecretValue",
            {"SecretId": "efficy-sync/demo/apsis"},
            [
                (
                    "secretsmanager:GetSecretValue",
                    f"arn:aws:secretsmanager:{R}:{ACCOUNT}:secret:efficy-sync/demo/apsis-AbCdEf",
                )
            ],
        ),
        (
            "ssm",
            "PutParameter",
            {"Name": "/efficy-sync/apsis-token/abc"},
            [("ssm:PutParameter", f"arn:aws:ssm:{R}:{ACCOUNT}:parameter/efficy-sync/apsis-token/abc")],
        ),
        ("states", "DescribeExecution", {"executionArn": "arn:x"}, [("states:DescribeExecution", "arn:x")]),
        ("monitoring", "PutMetricData", {"Namespace": "N"}, [("monitoring:PutMetricData", "*")]),
    ],
)
def test_the_resource_of_each_kind_of_call(prefix: str, operation: str, params: dict[str, Any], expected: Any) -> None:
    assert resources_of(prefix, operation, params, R) == expected


def test_only_a_function_s_own_calls_are_checked() -> None:
    current: list[str | None] = [None]
    enforcer = Enforcer({"CleanupFunction": [CRUD]}, R, scope=lambda: current[0])
    read_config = {"TableName": "efficy-sync-ConfigTable-X"}
    assert enforcer.refusal("dynamodb", "GetItem", read_config) is None  # the stack, the CLI, a test: the admin
    current[0] = "CleanupFunction"
    refused = enforcer.refusal("dynamodb", "GetItem", read_config)
    assert refused is not None and refused.startswith(DENIED_MARK) and "CleanupFunction" in refused
    assert enforcer.refusal("dynamodb", "GetItem", {"TableName": "efficy-sync-StateTable-X"}) is None


def test_decisions_are_remembered_per_function_and_forgotten_when_too_many(monkeypatch: pytest.MonkeyPatch) -> None:
    import efficy_sync_tools.local.iam as iam

    evaluated: list[tuple[str, str]] = []
    real = iam.allowed
    monkeypatch.setattr(iam, "allowed", lambda s, a, r: evaluated.append((a, r)) or real(s, a, r))
    monkeypatch.setattr(iam, "MAX_DECISIONS", 3)
    current = ["CleanupFunction"]
    enforcer = Enforcer({"CleanupFunction": [CRUD], "SyncPageFunction": []}, R, scope=lambda: current[0])
    put = {"Put": {"TableName": "efficy-sync-StateTable-X"}}
    assert enforcer.refusal("dynamodb", "TransactWriteItems", {"TransactItems": [put] * 50}) is None
    assert evaluated == [("dynamodb:PutItem", TABLE)]  # one table named 50 times: one evaluation
    assert enforcer.refusal("dynamodb", "PutItem", {"TableName": "efficy-sync-StateTable-X"}) is None
    assert len(evaluated) == 1  # remembered
    current[0] = "SyncPageFunction"  # another role: its own decision, refused
    refused = enforcer.refusal("dynamodb", "PutItem", {"TableName": "efficy-sync-StateTable-X"})
    assert refused is not None and "SyncPageFunction" in refused and len(evaluated) == 2
    assert enforcer.refusal("dynamodb", "PutItem", {"TableName": "efficy-sync-StateTable-X"}) == refused
    current[0] = "CleanupFunction"
    enforcer.refusal("dynamodb", "GetItem", {"TableName": "efficy-sync-StateTable-X"})  # a third decision
    enforcer.refusal("dynamodb", "Query", {"TableName": "efficy-sync-StateTable-X"})  # full: all forgotten
    enforcer.refusal("dynamodb", "PutItem", {"TableName": "efficy-sync-StateTable-X"})
    assert evaluated[-1] == ("dynamodb:PutItem", TABLE) and len(evaluated) == 5


def test_a_renamed_state_machine_is_checked_as_the_template_declares_it() -> None:
    declared = f"arn:aws:states:{R}:{ACCOUNT}:stateMachine:efficy-sync-full-sync"
    policy = {
        "Effect": "Allow",
        "Action": "states:DescribeExecution",
        "Resource": declared.replace(":stateMachine:", ":execution:") + ":*",
    }
    from efficy_sync_tools.local.iam import build

    class _Iam:
        def list_role_policies(self, RoleName: str) -> dict[str, Any]:
            return {"PolicyNames": ["p"]}

        def get_role_policy(self, RoleName: str, PolicyName: str) -> dict[str, Any]:
            return {"PolicyDocument": str({"Statement": [policy]})}  # moto answers a Python literal

    copy = declared + "-local"
    enforcer = build(_Iam(), {"CleanupFunction": "role"}, R, lambda: "CleanupFunction", [(declared, copy)])
    execution = copy.replace(":stateMachine:", ":execution:") + ":run-1"
    assert enforcer.refusal("states", "DescribeExecution", {"executionArn": execution}) is None
