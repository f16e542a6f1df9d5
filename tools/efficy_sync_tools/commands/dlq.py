"""`efficy-sync dlq count|redrive`: the dead-letter queues, and sending their messages back once the cause is fixed.

The queues are found as every other command finds the product: the stack's outputs (or CONTACT_QUEUE_URL /
OPTOUT_QUEUE_URL in the environment, the dead-letter queue then read from the queue's redrive policy).
`redrive` uses SQS's own move task (StartMessageMoveTask) where the endpoint has it and the built-in mover
otherwise (see efficy_sync_tools.redrive), and says which it used.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from efficy_sync_tools.commands._args import non_negative_float, positive_int
from efficy_sync_tools.commands._aws import EXIT_FAILED, CliError, cli_command

QUEUES = {
    # name: (source env var, source output, DLQ output)
    "contact": ("CONTACT_QUEUE_URL", "ContactChangesQueueUrl", "ContactChangesDLQUrl"),
    "optout": ("OPTOUT_QUEUE_URL", "OptOutQueueUrl", "OptOutDLQUrl"),
    # bundles of large webhooks waiting to be split onto the contact queue (efficy_sync.bundles)
    "bundle": ("WEBHOOK_BUNDLE_QUEUE_URL", "WebhookBundleQueueUrl", "WebhookBundleDLQUrl"),
}


def register(sub: argparse._SubParsersAction) -> None:
    dlq = sub.add_parser("dlq", help="dead-letter queues")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    redrive = dlq_sub.add_parser("redrive", help="move dead-lettered messages back to their queue")
    redrive.add_argument("--queue", choices=[*QUEUES, "all"], default="all")
    redrive.add_argument(
        "--limit", type=positive_int, default=None, help="move at most this many per queue (uses the built-in mover)"
    )
    redrive.add_argument(
        "--method",
        choices=("auto", "move-task", "mover"),
        default="auto",
        help="auto (default): SQS's StartMessageMoveTask where the endpoint has it, else the built-in mover",
    )
    redrive.add_argument(
        "--wait", type=non_negative_float, default=120.0, help="seconds to wait for a move task to finish (default 120)"
    )
    redrive.set_defaults(func=redrive_command)
    count = dlq_sub.add_parser("count", help="messages waiting in each dead-letter queue")
    count.set_defaults(func=count_command)


def _urls(name: str) -> tuple[str, str]:
    """(source queue URL, dead-letter queue URL): the environment or the stack's outputs for the source; the
    source's redrive policy for its DLQ (what SQS really uses), else the stack's DLQ output."""
    from efficy_sync.aws import client

    from efficy_sync_tools.commands._aws import stack_output

    env_var, source_output, dlq_output = QUEUES[name]
    sqs = client("sqs")
    source = os.environ.get(env_var) or stack_output(source_output)
    attrs = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    if attrs.get("RedrivePolicy"):
        dlq_name = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[1]
        return source, sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]
    try:
        return source, stack_output(dlq_output)
    except CliError:
        raise CliError(f"the {name} queue has no dead-letter queue (no redrive policy on {source})") from None


def _names(queue: str) -> list[str]:
    return list(QUEUES) if queue == "all" else [queue]


@cli_command
def redrive_command(args: argparse.Namespace) -> int:
    from efficy_sync.aws import client

    from efficy_sync_tools.redrive import MOVE_TASK, MOVER, MoveTaskUnavailable, redrive

    method = {"move-task": MOVE_TASK, "mover": MOVER}.get(args.method, "auto")
    results: dict[str, dict[str, Any]] = {}
    for name in _names(args.queue):
        source, dlq = _urls(name)
        try:
            report = redrive(client("sqs"), dlq, source, limit=args.limit, method=method, wait=args.wait)
        except (MoveTaskUnavailable, ValueError) as exc:
            raise CliError(
                f"{name}: {MOVE_TASK} cannot be used: {exc}. `--method mover` (or `auto`, the default) moves the "
                "messages with the built-in mover"
            ) from None
        results[name] = report.document()
    if args.output == "json":
        print(json.dumps({"queues": results}, indent=2))
    else:
        for name, r in results.items():
            print(
                f"{name}: moved {r['moved']} message(s) back to the queue"
                + (f", {r['failed']} failed" if r["failed"] else "")
            )
            if r["method"] == MOVE_TASK:
                state = r["task_status"] or "?"
                print(
                    f"  with SQS's own move task ({MOVE_TASK}, task {state}{', ' + r['reason'] if r.get('reason') else ''})"
                )
                if state == "RUNNING":
                    print(f"  still moving after {args.wait:.0f}s; SQS goes on: watch `efficy-sync dlq count`")
                if r.get("failure"):
                    print(f"  the task failed: {r['failure']}")
            else:
                print(f"  with the built-in mover ({r.get('reason', '')})")
    failed = any(r["failed"] or r.get("task_status") == "FAILED" for r in results.values())
    return EXIT_FAILED if failed else 0


@cli_command
def count_command(args: argparse.Namespace) -> int:
    from efficy_sync.aws import client

    counts: dict[str, int] = {}
    for name in QUEUES:
        _, dlq = _urls(name)
        attrs = client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
        counts[name] = int(attrs["ApproximateNumberOfMessages"])
    if args.output == "json":
        print(json.dumps({"queues": counts}, indent=2))
    else:
        for name, n in counts.items():
            print(f"{name}: {n} message(s) in the dead-letter queue")
    return 0
