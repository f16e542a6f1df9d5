"""Reading a secret that does not exist names it (Secrets Manager's message does not)."""

from __future__ import annotations

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from efficy_sync import aws, secrets
from moto import mock_aws


def test_a_missing_secret_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("CONFIG_TABLE", "STATE_TABLE", "CONTACT_QUEUE_URL"):
        monkeypatch.setenv(name, "unused")
    from efficy_sync.settings import settings

    settings.cache_clear()
    with mock_aws():
        aws.reset_clients()
        secrets.reset()
        boto3.client("secretsmanager").create_secret(Name="efficy-sync/x/efficy", SecretString="key")
        assert secrets.get_secret("efficy-sync/x/efficy") == "key"
        with pytest.raises(GetParameterError, match="secret 'efficy-sync/x/apsis' could not be read"):
            secrets.get_json_secret("efficy-sync/x/apsis")
    aws.reset_clients()
    secrets.reset()
    settings.cache_clear()
