"""The CLI reads the stack's outputs once per process, and per AWS endpoint and region.

The cache was keyed by the stack's name alone: a process that had read the stack in one place and was then
pointed at another (the suite runs commands in-process against the local stack, then against in-process moto)
kept the first stack's queue URLs, and `health` asked the second place for a queue it did not have (CI, stop 43).
"""

from __future__ import annotations

import json

import boto3
import pytest
from efficy_sync import aws
from efficy_sync_tools.commands._aws import CliError, stack_output

TEMPLATE = {
    "Resources": {"Bundles": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "bundles"}}},
    "Outputs": {"WebhookBundleQueueUrl": {"Value": {"Ref": "Bundles"}}},
}


def test_outputs_read_in_one_region_are_not_taken_for_another_s(
    in_process_aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EFFICY_SYNC_STACK", raising=False)
    boto3.client("cloudformation", region_name=in_process_aws).create_stack(
        StackName="efficy-sync", TemplateBody=json.dumps(TEMPLATE)
    )
    assert stack_output("WebhookBundleQueueUrl").endswith("/bundles")

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # no stack there
    aws.reset_clients()
    with pytest.raises(CliError, match="not found in region us-east-1"):
        stack_output("WebhookBundleQueueUrl")

    monkeypatch.setenv("AWS_DEFAULT_REGION", in_process_aws)
    aws.reset_clients()
    assert stack_output("WebhookBundleQueueUrl").endswith("/bundles")


def test_only_cloudformation_s_does_not_exist_reads_as_no_such_stack(
    in_process_aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any ValidationError read as "stack not found" sent the admin to check the region and names; CloudFormation
    says "does not exist" for that, and its other refusals are shown as it gave them."""
    from botocore.exceptions import ClientError

    monkeypatch.setenv("EFFICY_SYNC_STACK", "efficy_sync!")
    cfn = aws.client("cloudformation")
    refusal = "1 validation error detected: Value 'efficy_sync!' at 'stackName' failed to satisfy constraint"

    def refused(**kwargs: object) -> dict:
        raise ClientError({"Error": {"Code": "ValidationError", "Message": refusal}}, "DescribeStacks")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cfn, "describe_stacks", refused)
        with pytest.raises(CliError) as caught:
            stack_output("WebhookBundleQueueUrl")
    assert "not found" not in str(caught.value) and "failed to satisfy constraint" in str(caught.value)

    monkeypatch.setenv("EFFICY_SYNC_STACK", "no-such-stack")  # moto's own answer: "... does not exist"
    with pytest.raises(CliError, match="'no-such-stack' not found in region"):
        stack_output("WebhookBundleQueueUrl")
