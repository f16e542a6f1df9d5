"""moto's Step Functions on the local stack (local/moto_sfn.py): an execution stopped inside a Map stays ABORTED.

moto's interpreter reported such an execution FAILED (States.Runtime) a moment after the stop, when the Map's
aborted iterations ended in an error of its own; `full-sync cancel` then now and then ended a cancelled run as
failed. A Map of Wait states, stopped while its iterations wait, as the full sync's pages do.
"""

from __future__ import annotations

import json
import time
from typing import Any

from efficy_sync_tools.local.aws import MotoServer, client
from efficy_sync_tools.testing import wait_for

REGION = "eu-west-1"
MAP_OF_WAITS = {
    "StartAt": "Pages",
    "States": {
        "Pages": {
            "Type": "Map",
            "ItemsPath": "$.pages",
            "MaxConcurrency": 3,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Page",
                "States": {"Page": {"Type": "Wait", "Seconds": 2, "End": True}},
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed"}],
            "Next": "Done",
        },
        "Failed": {"Type": "Fail", "Error": "RunFailed"},
        "Done": {"Type": "Succeed"},
    },
}


def _status(sfn: Any, arn: str) -> dict[str, Any]:
    return sfn.describe_execution(executionArn=arn)


def test_an_execution_stopped_while_its_map_runs_ends_aborted_and_stays_so(moto: MotoServer) -> None:
    sfn = client("stepfunctions", moto.endpoint, REGION)
    machine = sfn.create_state_machine(
        name="stop-in-map", definition=json.dumps(MAP_OF_WAITS), roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]
    arns = []
    for run in range(3):
        arn = sfn.start_execution(stateMachineArn=machine, name=f"run-{run}", input=json.dumps({"pages": [1] * 9}))[
            "executionArn"
        ]
        wait_for("the Map's first iterations", lambda a=arn: _history_has(sfn, a, "MapIterationStarted"), timeout=20)
        sfn.stop_execution(executionArn=arn, error="Cancelled", cause="efficy-sync full-sync cancel")
        arns.append(arn)
    time.sleep(2.5)  # past the iterations' own Wait: moto's aborted Map has ended with its error by now
    ended = {arn.rsplit(":", 1)[1]: _status(sfn, arn) for arn in arns}
    assert {name: d["status"] for name, d in ended.items()} == {f"run-{r}": "ABORTED" for r in range(3)}, {
        name: (d["status"], d.get("error"), d.get("cause")) for name, d in ended.items()
    }


def _history_has(sfn: Any, arn: str, event_type: str) -> bool:
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return any(event["type"] == event_type for event in events)
