"""Reading a secret that does not exist names it (Secrets Manager's message does not)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from efficy_sync import aws, secrets
from efficy_sync.settings import settings
from moto import mock_aws


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A Lambda's environment, in-process moto's credentials; shared clients and cached secrets forgotten after."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("CONFIG_TABLE", "STATE_TABLE", "CONTACT_QUEUE_URL"):
        monkeypatch.setenv(name, "unused")
    settings.cache_clear()
    try:
        yield
    finally:
        aws.reset_clients()
        secrets.reset()
        settings.cache_clear()


def test_a_missing_secret_is_named(lambda_env: None) -> None:
    with mock_aws():
        aws.reset_clients()
        secrets.reset()
        boto3.client("secretsmanager").create_secret(Name="efficy-sync/x/efficy", SecretString="key")
        assert secrets.get_secret("efficy-sync/x/efficy") == "key"
        with pytest.raises(GetParameterError, match="secret 'efficy-sync/x/apsis' could not be read"):
            secrets.get_json_secret("efficy-sync/x/apsis")


def test_clients_rebuilt_for_another_region_read_that_region_s_secrets(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider was built once per process on the first client: after aws.reset_clients (the local stack,
    the tests pointing the shared clients elsewhere) secrets were still read, and cached, where it was built."""
    with mock_aws():
        for region, value in (("eu-west-1", "west"), ("us-east-1", "east")):
            boto3.client("secretsmanager", region_name=region).create_secret(Name="s", SecretString=value)
        secrets.reset()
        for region, value in (("eu-west-1", "west"), ("us-east-1", "east")):
            monkeypatch.setenv("AWS_DEFAULT_REGION", region)
            aws.reset_clients()  # what moving the shared clients to another endpoint or region does
            assert secrets.get_secret("s") == value
