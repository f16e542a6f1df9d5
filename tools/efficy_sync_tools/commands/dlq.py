"""`efficy-sync dlq redrive`: send dead-lettered messages back to be processed, once the cause is fixed."""

from __future__ import annotations

import argparse
import os
import sys

QUEUES = {
    # name: (source env var, source output, DLQ output)
    "contact": ("CONTACT_QUEUE_URL", "ContactChangesQueueUrl", "ContactChangesDLQUrl"),
    "optout": ("OPTOUT_QUEUE_URL", "OptOutQueueUrl", "OptOutDLQUrl"),
}


def register(sub: argparse._SubParsersAction) -> None:
    dlq = sub.add_parser("dlq", help="dead-letter queues")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    redrive = dlq_sub.add_parser("redrive", help="move dead-lettered messages back to their queue")
    redrive.add_argument("--queue", choices=[*QUEUES, "all"], default="all")
    redrive.add_argument("--limit", type=int, default=None, help="move at most this many per queue")
    redrive.set_defaults(func=redrive_command)
    count = dlq_sub.add_parser("count", help="messages waiting in each dead-letter queue")
    count.set_defaults(func=count_command)


def _urls(name: str) -> tuple[str, str]:
    """Source and DLQ URLs: from the stack's outputs, or the environment (DLQ found by redrive policy)."""
    import json

    from efficy_sync.aws import client

    env_var, source_output, dlq_output = QUEUES[name]
    sqs = client("sqs")
    source = os.environ.get(env_var) or _output(source_output)
    policy = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    dlq_arn = json.loads(policy)["deadLetterTargetArn"]
    dlq = sqs.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[1])["QueueUrl"]
    return source, dlq or _output(dlq_output)


def _output(name: str) -> str:
    from efficy_sync.aws import client

    stack = os.environ.get("EFFICY_SYNC_STACK", "efficy-sync")
    outputs = client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    for output in outputs:
        if output["OutputKey"] == name:
            return output["OutputValue"]
    raise LookupError(f"stack {stack} has no output {name}; set the queue URL in the environment")


def redrive_command(args: argparse.Namespace) -> int:
    from efficy_sync.aws import client

    from efficy_sync_tools.redrive import redrive

    names = list(QUEUES) if args.queue == "all" else [args.queue]
    status = 0
    for name in names:
        try:
            source, dlq = _urls(name)
        except Exception as exc:
            print(f"{name}: cannot find the queues: {exc}", file=sys.stderr)
            status = 1
            continue
        report = redrive(client("sqs"), dlq, source, limit=args.limit)
        print(
            f"{name}: moved {report.moved} message(s) back to the queue"
            + (f", {report.failed} failed" if report.failed else "")
        )
        status = status or (1 if report.failed else 0)
    return status


def count_command(args: argparse.Namespace) -> int:
    from efficy_sync.aws import client

    for name in QUEUES:
        _, dlq = _urls(name)
        attrs = client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
        print(f"{name}: {attrs['ApproximateNumberOfMessages']} message(s) in the dead-letter queue")
    return 0
