"""The test process's boto3 sessions share botocore's data (tests/support.py share_botocore_data)."""

from __future__ import annotations


def test_every_boto3_session_of_the_test_process_shares_one_botocore_data_loader() -> None:
    """tests/support.py share_botocore_data: a session made inside each test's mock_aws reads no model again."""
    import boto3
    from moto import mock_aws

    loaders = []
    for _ in range(2):
        with mock_aws():
            session = boto3.session.Session(region_name="eu-west-1")
            session.client("dynamodb")
            loaders.append(session._session.get_component("data_loader"))
    assert loaders[0] is loaders[1]
