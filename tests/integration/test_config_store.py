"""The config store's bodies (moto in-process): what an older Lambda than the CLI that applied them can load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from efficy_sync.config import ConfigError, IntegrationConfig, load_config_file
from efficy_sync.store.configs import ConfigConflict, ConfigStore, UnreadableConfig

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
    # a setting it cannot honour: refused, not ignored; as the product's ConfigError naming the version, which
    # every caller reports (pydantic's own error ended `config show` and `config apply` in a traceback)
    with pytest.raises(UnreadableConfig, match="demo version 2 cannot be read") as refused:
        store.get("demo")
    assert isinstance(refused.value, ConfigError)
    assert (refused.value.integration_id, refused.value.version) == ("demo", 2)
    assert [p.path for p in refused.value.problems] == ["new_setting"]
    with pytest.raises(UnreadableConfig, match="demo version 2"):
        store.version("demo", 2)
    assert store.version("demo", 1) == demo
    # the local stack and the demo apply on top of whatever is live, even a version they cannot read
    assert store.put(demo, applied_by="local-stack") == 3 and store.get("demo") == demo


def test_a_value_set_on_purpose_is_kept_even_when_it_equals_the_default(store: ConfigStore) -> None:
    demo = load_config_file(ROOT / "examples" / "demo.yaml")
    default = type(demo.safety)().max_removal_percent
    chosen = demo.model_copy(update={"safety": demo.safety.model_copy(update={"max_removal_percent": default})})
    store.put(chosen, applied_by="admin")
    assert _body("demo")["safety"]["max_removal_percent"] == default  # a later default does not change it
    assert "max_concurrency" not in _body("demo").get("full_sync", {})  # never set: left to the code's default
    assert store.get("demo") == chosen and store.version("demo", 1) == chosen


def test_a_change_based_on_an_older_version_is_refused_naming_the_version_applied_meanwhile(
    store: ConfigStore,
) -> None:
    demo = load_config_file(ROOT / "examples" / "demo.yaml")
    assert store.put(demo, applied_by="admin-a", expected_version=0) == 1
    fixed = demo.model_copy(update={"consent_mappings": demo.consent_mappings[1:]})
    assert store.put(fixed, applied_by="admin-b", expected_version=1) == 2

    # admin A read version 1 and showed the changes against it: version 2 must not be silently overwritten
    with pytest.raises(ConfigConflict, match="version 2 was applied meanwhile by admin-b") as conflict:
        store.put(demo, applied_by="admin-a", expected_version=1)
    assert "based on version 1" in str(conflict.value) and conflict.value.applied is not None
    # a first apply when someone created the integration meanwhile
    with pytest.raises(ConfigConflict, match=r"version 2 was applied meanwhile.*for a new integration"):
        store.put(demo, applied_by="admin-c", expected_version=0)
    assert [v["version"] for v in store.history("demo")] == [1, 2] and store.get("demo") == fixed
    assert store.put(demo, applied_by="admin-a", expected_version=2) == 3  # reviewed, and applied again
