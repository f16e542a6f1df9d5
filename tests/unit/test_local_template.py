"""The local stack deploys template.yaml with its outputs, so the CLI finds its resources as on AWS."""

from __future__ import annotations

from pathlib import Path

import pytest
from efficy_sync_tools.local.template import SamTemplate, referenced_ids

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # samtranslator resolves pseudo parameters from a region


def test_outputs_are_kept_and_the_api_url_is_the_local_front() -> None:
    template = SamTemplate.load(ROOT / "template.yaml")
    body = template.prepare_for_moto("bucket", "code.zip", {"ApiUrl": "http://127.0.0.1:9/dev"})
    assert set(body["Outputs"]) == set(template.raw["Outputs"])
    assert body["Outputs"]["ApiUrl"]["Value"] == "http://127.0.0.1:9/dev"
    assert body["Outputs"]["FullSyncStateMachineArn"]["Value"] == {"Ref": "FullSyncStateMachine"}
    for name, output in body["Outputs"].items():
        known = set(body["Resources"]) | set(template.raw["Parameters"]) | {"AWS::Region", "AWS::StackName"}
        assert referenced_ids(output["Value"]) <= known, name


def test_without_a_value_an_output_on_an_emulated_resource_is_left_out() -> None:
    body = SamTemplate.load(ROOT / "template.yaml").prepare_for_moto("bucket", "code.zip")
    assert "ApiUrl" not in body["Outputs"] and "ConfigTableName" in body["Outputs"]


def test_referenced_ids_reads_ref_getatt_and_sub() -> None:
    value = {"Fn::Sub": "https://${Api}.execute-api.${AWS::Region}/${Stage}", "x": [{"Fn::GetAtt": "Q.Arn"}]}
    assert referenced_ids(value) == {"Api", "AWS::Region", "Stage", "Q"}
    assert referenced_ids({"Fn::Sub": ["${A}-${B.Name}", {"A": {"Ref": "C"}}]}) == {"A", "B", "C"}
