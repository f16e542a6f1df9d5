"""Reads template.yaml the way `sam deploy` would, so the local stack runs what AWS would run.

The local stack must not keep a second, hand-written list of resources: tables, queues, functions, routes,
event sources and the state machine all come from here. `prepare_for_moto` does what `sam package` does
(code to S3, ASL file inlined) and transforms the SAM template offline into plain CloudFormation.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ROUTE_EVENT_TYPES = {"Api", "HttpApi"}
# What the local stack emulates itself (HTTP front, alarms are inert offline) or creates through the API
# (secrets): moto's CloudFormation either lacks these types or needs properties AWS does not.
EMULATED_PREFIXES = (
    "AWS::ApiGateway::",
    "AWS::ApiGatewayV2::",
    "AWS::CloudWatch::",
    "AWS::Logs::QueryDefinition",  # saved Logs Insights queries: nothing to run offline
    "AWS::SecretsManager::",
    "AWS::SNS::Subscription",
    "AWS::Lambda::Permission",
    "AWS::S3::BucketPolicy",
)


@dataclass(frozen=True)
class ApiRoute:
    function: str  # logical id
    method: str
    path: str  # "/integrations/{integration_id}/efficy/webhook"

    @property
    def regex(self) -> re.Pattern[str]:
        pattern = re.sub(r"\\\{([^}/]+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        return re.compile(f"^{pattern}/?$")


@dataclass(frozen=True)
class SqsSource:
    function: str
    queue: str  # logical id of the queue
    batch_size: int = 10
    report_batch_item_failures: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class ScheduleSource:
    function: str
    rate_seconds: int
    input: dict[str, Any]


@dataclass(frozen=True)
class EventRuleSource:
    function: str
    pattern: dict[str, Any]


@dataclass
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str  # "app.handler"
    environment: dict[str, Any] = field(default_factory=dict)
    #: the function's Timeout (its own, else Globals', else Lambda's 3 s): what its context's remaining time
    #: counts down from, so deadline logic runs with the budget it has on AWS
    timeout: int = 3


@dataclass
class SamTemplate:
    """The parts of template.yaml the local stack needs to imitate Lambda, API Gateway and event sources."""

    root: Path
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> SamTemplate:
        path = Path(path)
        return cls(root=path.parent, raw=cfn_yaml.loads(path.read_text(), str(path)))

    @property
    def resources(self) -> dict[str, Any]:
        return self.raw.get("Resources", {})

    def of_type(self, type_name: str) -> dict[str, Any]:
        return {k: v for k, v in self.resources.items() if v.get("Type") == type_name}

    def _globals(self) -> dict[str, Any]:
        return self.raw.get("Globals", {}).get("Function", {})

    def functions(self) -> dict[str, FunctionSpec]:
        specs = {}
        glob = self._globals()
        for logical_id, res in self.of_type("AWS::Serverless::Function").items():
            props = res.get("Properties", {})
            env = dict(glob.get("Environment", {}).get("Variables", {}))
            env.update(props.get("Environment", {}).get("Variables", {}))
            handler = props.get("Handler") or glob.get("Handler")
            timeout = int(props.get("Timeout") or glob.get("Timeout") or 3)
            specs[logical_id] = FunctionSpec(logical_id, self.root / props["CodeUri"], handler, env, timeout)
        return specs

    def _events(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for logical_id, res in self.of_type("AWS::Serverless::Function").items():
            for ev in res.get("Properties", {}).get("Events", {}).values():
                out.append((logical_id, ev.get("Type"), ev.get("Properties", {})))
        return out

    def api_routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(fn, props["Method"].upper(), props["Path"])
            for fn, kind, props in self._events()
            if kind in ROUTE_EVENT_TYPES
        ]

    def binary_media_types(self) -> tuple[str, ...]:
        """The APIs' BinaryMediaTypes ('~1' is SAM's escape of '/'): bodies of these types arrive base64-encoded."""
        found: list[str] = []
        for res in self.of_type("AWS::Serverless::Api").values():
            types = self._chosen(res.get("Properties", {}).get("BinaryMediaTypes", []))
            found += [str(t).replace("~1", "/") for t in types if isinstance(t, str)]
        return tuple(found)

    def _chosen(self, node: Any) -> Any:
        """An `!If` of a condition `!Equals [!Ref Param, value]`, as deployed with the parameters' defaults
        (`!Ref AWS::NoValue`: nothing); any other node as it is."""
        if not (isinstance(node, dict) and isinstance(node.get("Fn::If"), list)):
            return node
        name, then, otherwise = node["Fn::If"]
        test = self.raw.get("Conditions", {}).get(name, {}).get("Fn::Equals", [None, None])
        chosen = then if str(self._value(test[0])) == str(self._value(test[1])) else otherwise
        return [] if chosen == {"Ref": "AWS::NoValue"} else chosen

    def sqs_sources(self) -> list[SqsSource]:
        sources = []
        for fn, kind, props in self._events():
            if kind != "SQS":
                continue
            queue = props["Queue"]
            queue_id = queue["Fn::GetAtt"][0] if isinstance(queue, dict) else str(queue).split(".")[0]
            sources.append(
                SqsSource(
                    function=fn,
                    queue=queue_id,
                    batch_size=int(props.get("BatchSize", 10)),
                    report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                    enabled=bool(props.get("Enabled", True)),
                )
            )
        return sources

    def schedules(self) -> list[ScheduleSource]:
        out = []
        for fn, kind, props in self._events():
            if kind in {"Schedule", "ScheduleV2"}:
                if self._value(props.get("State", "ENABLED")) == "DISABLED" or props.get("Enabled") is False:
                    continue  # deployed off (e.g. the drift check): the local stack does not run it either
                expr = self._value(props.get("Schedule") or props.get("ScheduleExpression", ""))
                payload = self._value(props.get("Input"))
                out.append(ScheduleSource(fn, rate_to_seconds(expr), json.loads(payload) if payload else {}))
        return out

    def _value(self, node: Any) -> Any:
        """A `!Ref` to a parameter, or a `!Sub` of parameters, as deployed with the parameters' defaults."""
        params = {k: str(v.get("Default", "")) for k, v in self.raw.get("Parameters", {}).items()}
        if isinstance(node, dict) and "Ref" in node:
            return params.get(node["Ref"], node)
        if isinstance(node, dict) and isinstance(node.get("Fn::Sub"), str):
            return re.sub(r"\$\{([^}!.]+)\}", lambda m: params.get(m.group(1), m.group(0)), node["Fn::Sub"])
        return node

    def event_rules(self) -> list[EventRuleSource]:
        return [
            EventRuleSource(fn, props.get("Pattern", {}))
            for fn, kind, props in self._events()
            if kind in {"EventBridgeRule", "CloudWatchEvent"}
        ]

    def state_machines(self) -> dict[str, dict[str, Any]]:
        """Logical id -> {"definition": str (ASL, substitutions unresolved), "substitutions": {...}}."""
        out = {}
        for logical_id, res in self.of_type("AWS::Serverless::StateMachine").items():
            props = res["Properties"]
            if "DefinitionUri" in props:
                definition = (self.root / props["DefinitionUri"]).read_text()
            else:
                definition = json.dumps(props["Definition"])
            out[logical_id] = {"definition": definition, "substitutions": props.get("DefinitionSubstitutions", {})}
        return out

    def prepare_for_moto(self, bucket: str, key: str, output_values: dict[str, str] | None = None) -> dict[str, Any]:
        """What `sam package` + the SAM transform would hand to CloudFormation, computed offline.

        The outputs stay, so the CLI finds the local stack's resources the way it finds a deployed stack's;
        an output that points at an emulated resource (the API URL) takes its value from `output_values`
        (the local stack knows it), or is left out when none is given."""
        tpl = _plain(copy.deepcopy(self.raw))
        for res in tpl.get("Resources", {}).values():
            props = res.get("Properties", {})
            if res.get("Type") == "AWS::Serverless::Function":
                props["CodeUri"] = {"Bucket": bucket, "Key": key}
            elif res.get("Type") == "AWS::Serverless::LayerVersion":
                props["ContentUri"] = {"Bucket": bucket, "Key": key}
            elif res.get("Type") == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
                props["Definition"] = json.loads((self.root / props.pop("DefinitionUri")).read_text())
        transformed = sam_transform(tpl)
        emulated = {k for k, v in transformed["Resources"].items() if v["Type"].startswith(EMULATED_PREFIXES)}
        transformed["Resources"] = {k: v for k, v in transformed["Resources"].items() if k not in emulated}
        outputs: dict[str, Any] = {}
        for name, output in transformed.get("Outputs", {}).items():
            if name in (output_values or {}):
                outputs[name] = {**output, "Value": output_values[name]}  # type: ignore[index]
            elif not referenced_ids(output.get("Value")) & emulated:
                outputs[name] = output
        transformed["Outputs"] = outputs
        return transformed


def referenced_ids(node: Any) -> set[str]:
    """Logical ids a template value refers to (Ref, Fn::GetAtt, ${Name} in Fn::Sub); pseudo parameters too."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", str(text))}
                if isinstance(value, list) and len(value) > 1:
                    found |= referenced_ids(value[1])
            else:
                found |= referenced_ids(value)
    elif isinstance(node, list):
        for value in node:
            found |= referenced_ids(value)
    return found


def rate_to_seconds(expression: str) -> int:
    match = re.match(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        return 300  # cron expressions: the local sweeper only needs "now and then"
    n, unit = int(match.group(1)), match.group(2)
    return n * {"minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]


def _plain(node: Any) -> Any:
    """cfn-lint's nodes carry line marks; samtranslator wants plain dicts, lists and strings."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


class _NoIamPolicies:
    """The transform asks IAM for managed policy ARNs; offline we have none to give."""

    def load(self) -> dict[str, str]:
        return {}


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    import logging

    from samtranslator.translator.transform import transform

    logging.getLogger("samtranslator").setLevel(logging.ERROR)

    return transform(template, {}, _NoIamPolicies())
