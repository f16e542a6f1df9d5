"""Flipping the WebhookBodiesAsBytes stack parameter must reach the API's stage.

API Gateway serves a stage from a deployment, a snapshot of the API, and SAM names the deployment by a hash of
the OpenAPI body as written in the template: with the `!If` unresolved in it, the body hashes the same whichever
value the parameter has, so a deploy that flips it made no new deployment and the stage kept serving the bodies
the old way (the runbook's remedy for 401s did nothing). And a REST API created since 2021 *merges* a new
definition's binary media types with the ones it holds, so switching back to false left `*/*` in place.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from tests.unit.test_template import asl, sam_transform, template  # noqa: F401  (fixtures)


def _deployments(transformed: dict[str, Any]) -> list[str]:
    return [k for k, v in transformed["Resources"].items() if v["Type"] == "AWS::ApiGateway::Deployment"]


def test_a_deploy_that_flips_the_parameter_deploys_the_api_again(
    template: dict[str, Any],
    asl: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    seen = []
    for value, at in (("false", 1_800_000_000.0), ("true", 1_800_000_600.0)):
        flipped = copy.deepcopy(template)
        flipped["Parameters"]["WebhookBodiesAsBytes"]["Default"] = value
        with monkeypatch.context() as clock:
            clock.setattr(time, "time", lambda at=at: at)  # two deploys, ten minutes apart
            transformed = sam_transform(flipped, asl)
        (deployment,) = _deployments(transformed)
        seen.append(deployment)
        (api,) = [v for v in transformed["Resources"].values() if v["Type"] == "AWS::ApiGateway::RestApi"]
        # the definition replaces what the API holds: false removes the binary media types true set
        assert api["Properties"].get("Mode") == "overwrite"
    assert seen[0] != seen[1], "the same deployment: the stage keeps the old binary media types"
