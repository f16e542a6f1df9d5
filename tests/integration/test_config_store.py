"""The config store's bodies (moto in-process): what an older Lambda than the CLI that applied them can load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from efficy_sync.config import IntegrationConfig, load_config_file
from efficy_sync.store.configs import ConfigStore
from pydantic import ValidationError

from tests.support import create_pk_sk_table

ROOT = Path(__file__).resolve().parents[2]


class NewerConfig(IntegrationConfig):
    """The config model of a later version: one more setting, with a default."""

    new_setting: int = 3


@pytest.fixture
def store(in_process_aws: str) -> ConfigStore:
    create_pk_sk_table("config", in_process_aws)
    return ConfigStore("config")


def _body(integration_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName="config", Key={"pk": {"S": f"CONFIG#{integration_id}"}, "sk": {"S": "CURRENT"}}
    )["Item"]
    return json.loads(item["body"]["S"])


def test_a_config_applied_by_a_newer_cli_loads_in_an_older_lambda_unless_it_uses_the_new_setting(
    store: ConfigStore,
) -> None:
    demo = load_config_file(ROOT / "examples" / "demo.yaml")
    store.put(NewerConfig.model_validate(demo.model_dump(exclude_none=True)), applied_by="newer-cli")
    assert "new_setting" not in _body("demo")  # its default is not written down
    assert store.get("demo") == demo  # the older model loads it, whole

    store.put(
        NewerConfig.model_validate({**demo.model_dump(exclude_none=True), "new_setting": 5}), applied_by="newer-cli"
    )
    assert _body("demo")["new_setting"] == 5
    with pytest.raises(ValidationError, match="new_setting"):  # a setting it cannot honour: refused, not ignored
        store.get("demo")


def test_a_value_set_on_purpose_is_kept_even_when_it_equals_the_default(store: ConfigStore) -> None:
    demo = load_config_file(ROOT / "examples" / "demo.yaml")
    default = type(demo.safety)().max_removal_percent
    chosen = demo.model_copy(update={"safety": demo.safety.model_copy(update={"max_removal_percent": default})})
    store.put(chosen, applied_by="admin")
    assert _body("demo")["safety"]["max_removal_percent"] == default  # a later default does not change it
    assert "max_concurrency" not in _body("demo").get("full_sync", {})  # never set: left to the code's default
    assert store.get("demo") == chosen and store.version("demo", 1) == chosen
