"""Static checks of template.yaml and statemachines/full_sync.asl.json.

The template's logical IDs and wiring are an interface (the local stack builds itself from this file), and
cfn-lint does not look inside the ASL file, so the wiring that matters is asserted here.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from cfnlint.decode import cfn_yaml
from efficy_sync.redelivery import MAX_RECEIVES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
ASL_PATH = ROOT / "statemachines" / "full_sync.asl.json"

FUNCTION_FOLDERS = {
    "IngestWebhookFunction": "ingest_webhook",
    "ApplyChangesFunction": "apply_changes",
    "IngestOptoutFunction": "ingest_optout",
    "WriteBackFunction": "write_back",
    "FullSyncStepFunction": "full_sync_step",
    "SyncPageFunction": "sync_page",
    "CleanupFunction": "cleanup",
    "ReconcileFunction": "reconcile",
    "SplitWebhookFunction": "split_webhook",
}
ROUTES = {
    "IngestWebhookFunction": "/integrations/{integration_id}/efficy/webhook",
    "IngestOptoutFunction": "/integrations/{integration_id}/apsis/optout",
}
SECRET_ARN_SCOPE = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretsPrefix}/*"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    # cfn-lint's loader understands !Ref/!GetAtt/!Sub; the JSON round trip drops its node classes.
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE_PATH))))


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return json.loads(ASL_PATH.read_text())


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any], asl: dict[str, Any]) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # samtranslator resolves pseudo parameters from a region
        return sam_transform(template, asl)


def sam_transform(template: dict[str, Any], asl: dict[str, Any]) -> dict[str, Any]:
    """Transform offline as contracts/aws-local.md §8 describes (what `sam package` + CloudFormation would do)."""
    from samtranslator.translator.transform import transform

    class NoIamPolicyLoader:
        def load(self) -> dict[str, str]:
            return {}

    fragment = copy.deepcopy(template)
    for resource in fragment["Resources"].values():
        props = resource.get("Properties", {})
        if "CodeUri" in props:
            props["CodeUri"] = {"Bucket": "code-bucket", "Key": "function.zip"}
        if "ContentUri" in props:
            props["ContentUri"] = {"Bucket": "code-bucket", "Key": "layer.zip"}
        if "DefinitionUri" in props:
            del props["DefinitionUri"]
            props["Definition"] = copy.deepcopy(asl)
    return transform(fragment, {}, NoIamPolicyLoader())


def functions(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}


def events_of(resources: dict[str, Any], function: str, event_type: str) -> list[dict[str, Any]]:
    events = resources[function]["Properties"].get("Events", {})
    return [e["Properties"] for e in events.values() if e["Type"] == event_type]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def allow_statements(node: Any) -> Iterator[dict[str, Any]]:
    for item in walk(node):
        if isinstance(item, dict) and isinstance(item.get("Statement"), list):
            for statement in item["Statement"]:
                if statement.get("Effect") == "Allow":
                    yield statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- parameters, globals, outputs


def test_parameters_and_defaults(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert {name: params[name].get("Default") for name in params} == {
        "Stage": "dev",
        "AlarmEmail": "",
        "IntegrationId": "demo",
        "SecretsPrefix": "efficy-sync",
        "FreshnessHours": 24,
        "LogLevel": "INFO",
        "ReconcileScheduleState": "DISABLED",
        "ReconcileSchedule": "rate(1 day)",
        "ReconcileSample": 500,
        "WebhookBodiesAsBytes": "false",
    }


def test_each_stack_may_scope_its_secrets_by_a_prefix_no_other_stack_s_pattern_reaches(
    template: dict[str, Any],
) -> None:
    """Two stacks in one account (dev, prod) read secrets named <SecretsPrefix>/...: a prefix with a "/" could
    sit inside another stack's pattern (IAM's * spans "/"), so the parameter refuses one; the CLI reads it from
    the stack's output to check names."""
    pattern = re.compile(template["Parameters"]["SecretsPrefix"]["AllowedPattern"])
    assert pattern.fullmatch("efficy-sync") and pattern.fullmatch("efficy-sync-prod")
    assert not pattern.fullmatch("efficy-sync/prod") and not pattern.fullmatch("")
    assert template["Outputs"]["SecretsPrefix"]["Value"] == {"Ref": "SecretsPrefix"}
    assert "secret:efficy-sync/" not in json.dumps(template["Resources"])  # every grant follows the parameter


def test_globals_give_every_function_the_runtime_layer_and_environment(template: dict[str, Any]) -> None:
    g = template["Globals"]["Function"]
    assert g["Runtime"] == "python3.11"
    assert g["Architectures"] == ["arm64"]
    assert g["Layers"] == [{"Ref": "SharedLayer"}]
    assert g["Tracing"] == "Active"
    assert g["Environment"]["Variables"] == {
        "POWERTOOLS_SERVICE_NAME": "efficy-sync",
        "POWERTOOLS_METRICS_NAMESPACE": "EfficySync",
        "POWERTOOLS_LOG_LEVEL": {"Ref": "LogLevel"},
        "CONFIG_TABLE": {"Ref": "ConfigTable"},
        "STATE_TABLE": {"Ref": "StateTable"},
        "CONTACT_QUEUE_URL": {"Ref": "ContactChangesQueue"},
        "OPTOUT_QUEUE_URL": {"Ref": "OptOutQueue"},
        "APSIS_TOKEN_PARAMETER_PREFIX": {"Fn::Sub": "/${AWS::StackName}/apsis-token"},
    }


def test_outputs_the_local_stack_and_cli_read(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) >= {
        "ApiUrl",
        "ConfigTableName",
        "StateTableName",
        "ContactChangesQueueUrl",
        "ContactChangesDLQUrl",
        "OptOutQueueUrl",
        "OptOutDLQUrl",
        "FullSyncStateMachineArn",
        "PagesBucketName",
        "ApsisTokenParameterPrefix",
    }
    api_url = template["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"]
    assert api_url == "https://${EfficySyncApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}"


# ---------------------------------------------------------------- functions and their events


@pytest.mark.parametrize(("logical_id", "folder"), sorted(FUNCTION_FOLDERS.items()))
def test_function_code_folder_and_handler(resources: dict[str, Any], logical_id: str, folder: str) -> None:
    props = resources[logical_id]["Properties"]
    assert props["CodeUri"] == f"functions/{folder}/"
    assert props["Handler"] == "app.handler"
    code_dir = ROOT / props["CodeUri"]
    assert code_dir.is_dir(), f"{code_dir} is missing"
    if not (code_dir / "app.py").is_file():
        pytest.skip(f"functions/{folder}/app.py is not written yet")
    assert re.search(r"^(def handler\(|handler\s*=)", (code_dir / "app.py").read_text(), re.MULTILINE)


def test_every_function_is_known(resources: dict[str, Any]) -> None:
    assert set(functions(resources)) == set(FUNCTION_FOLDERS)


@pytest.mark.parametrize(("logical_id", "path"), sorted(ROUTES.items()))
def test_api_routes_on_the_shared_rest_api(resources: dict[str, Any], logical_id: str, path: str) -> None:
    routes = events_of(resources, logical_id, "Api")
    for route in routes:
        assert route["RestApiId"] == {"Ref": "EfficySyncApi"}
        assert route["Path"] == path
    # The opt-out route also takes a GET: APSIS One's Webhook node may send the fields as URL parameters.
    expected = ["get", "post"] if logical_id == "IngestOptoutFunction" else ["post"]
    assert sorted(route["Method"].lower() for route in routes) == expected


def test_api_throttling_and_tracing(resources: dict[str, Any]) -> None:
    api = resources["EfficySyncApi"]
    assert api["Type"] == "AWS::Serverless::Api"
    props = api["Properties"]
    assert props["StageName"] == {"Ref": "Stage"}
    # A stage trace records the URL with its query string: the url_token secret and GET opt-out fields.
    assert props["TracingEnabled"] is False


def method_setting(resources: dict[str, Any], path: str) -> dict[str, Any]:
    escaped = "/" + path.replace("/", "~1")  # MethodSettings write each "/" of the path as "~1", after a "/"
    settings = [s for s in resources["EfficySyncApi"]["Properties"]["MethodSettings"] if s["ResourcePath"] == escaped]
    assert len(settings) == 1, f"no throttling of its own for {path}"
    return settings[0]


def test_each_public_route_has_its_own_throttling(resources: dict[str, Any]) -> None:
    """Limits apply per method; each route gets its own, so a flood on the opt-out route (anyone can call it
    with a wrong token) cannot use up the webhooks' share, and the opt-out route is held well below it."""
    webhook = method_setting(resources, ROUTES["IngestWebhookFunction"])
    optout = method_setting(resources, ROUTES["IngestOptoutFunction"])
    assert webhook["HttpMethod"] == "POST"
    assert optout["HttpMethod"] == "*"  # every method of the route (POST, and a GET form)
    assert optout["ThrottlingRateLimit"] < webhook["ThrottlingRateLimit"]
    assert optout["ThrottlingBurstLimit"] < webhook["ThrottlingBurstLimit"]
    (default,) = [s for s in resources["EfficySyncApi"]["Properties"]["MethodSettings"] if s["ResourcePath"] == "/*"]
    assert default["ThrottlingRateLimit"] <= optout["ThrottlingRateLimit"]  # a future route starts low


def test_no_route_creates_an_implicit_api(resources: dict[str, Any]) -> None:
    for logical_id in functions(resources):
        for route in events_of(resources, logical_id, "Api"):
            assert route.get("RestApiId") == {"Ref": "EfficySyncApi"}, logical_id


def test_apply_changes_reads_the_fifo_queue_with_partial_batch_failures(resources: dict[str, Any]) -> None:
    (esm,) = events_of(resources, "ApplyChangesFunction", "SQS")
    assert esm["Queue"] == {"Fn::GetAtt": ["ContactChangesQueue", "Arn"]}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= esm["BatchSize"] <= 10  # FIFO maximum
    assert esm["ScalingConfig"]["MaximumConcurrency"] == 50
    queue = resources["ContactChangesQueue"]["Properties"]
    assert queue["FifoQueue"] is True
    assert queue["QueueName"]["Fn::Sub"].endswith(".fifo")  # moto refuses a generated FIFO name


def test_write_back_reads_the_optout_queue_with_partial_batch_failures(resources: dict[str, Any]) -> None:
    (esm,) = events_of(resources, "WriteBackFunction", "SQS")
    assert esm["Queue"] == {"Fn::GetAtt": ["OptOutQueue", "Arn"]}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize(
    ("queue", "dlq", "consumer", "max_receive", "fifo"),
    [
        # the workers leave the last receive undelayed (redelivery.py): they must know the queue's count
        ("ContactChangesQueue", "ContactChangesDLQ", "ApplyChangesFunction", MAX_RECEIVES, True),
        ("OptOutQueue", "OptOutDLQ", "WriteBackFunction", MAX_RECEIVES, False),
    ],
)
def test_queue_redrives_to_its_dlq(
    template: dict[str, Any], queue: str, dlq: str, consumer: str, max_receive: int, fifo: bool
) -> None:
    resources = template["Resources"]
    props = resources[queue]["Properties"]
    assert props["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
        "maxReceiveCount": max_receive,
    }
    timeout = resources[consumer]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    assert props["VisibilityTimeout"] >= 6 * timeout
    assert props["SqsManagedSseEnabled"] is True
    dlq_props = resources[dlq]["Properties"]
    assert dlq_props["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq_props.get("FifoQueue", False) is fifo  # a FIFO queue needs a FIFO DLQ
    if fifo:
        assert dlq_props["QueueName"]["Fn::Sub"].endswith(".fifo")
        assert props["ContentBasedDeduplication"] is False
        assert props["DeduplicationScope"] == "messageGroup"
        assert props["FifoThroughputLimit"] == "perMessageGroupId"


def test_cleanup_listens_to_ended_executions_of_the_full_sync_and_sweeps(resources: dict[str, Any]) -> None:
    (rule,) = events_of(resources, "CleanupFunction", "EventBridgeRule")
    assert rule["Pattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["ABORTED", "TIMED_OUT", "FAILED"], "stateMachineArn": [{"Ref": "FullSyncStateMachine"}]},
    }
    (schedule,) = events_of(resources, "CleanupFunction", "Schedule")
    assert schedule["Schedule"] == "rate(5 minutes)"
    assert json.loads(schedule["Input"]) == {"sweep": True}
    # it matches runs by execution ARN and asks Step Functions about each execution: no function reads the state
    # machine's own ARN (the CLI finds it through the stack's outputs)
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            variables = resource["Properties"].get("Environment", {}).get("Variables", {})
            assert "STATE_MACHINE_ARN" not in variables, name


# ---------------------------------------------------------------- tables, bucket, secrets


@pytest.mark.parametrize("table", ["ConfigTable", "StateTable"])
def test_tables(resources: dict[str, Any], table: str) -> None:
    assert resources[table]["Type"] == "AWS::DynamoDB::Table"
    props = resources[table]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_state_table_expires_items(resources: dict[str, Any]) -> None:
    ttl = resources["StateTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}


def test_pages_bucket_is_private_encrypted_and_expiring(resources: dict[str, Any]) -> None:
    props = resources["PagesBucket"]["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == 7


def test_secrets_are_named_for_the_integration_and_hold_no_literal_value(resources: dict[str, Any]) -> None:
    names = {
        "EfficyApiKeySecret": "efficy",
        "WebhookSecret": "webhook",
        "ApsisCredentialsSecret": "apsis",
        "ApsisOptoutTokenSecret": "apsis-optout",
    }
    for logical_id, suffix in names.items():
        props = resources[logical_id]["Properties"]
        assert props["Name"] == {"Fn::Sub": f"${{SecretsPrefix}}/${{IntegrationId}}/{suffix}"}
        assert "SecretString" not in props
        assert "GenerateSecretString" in props
    template = json.loads(
        resources["ApsisCredentialsSecret"]["Properties"]["GenerateSecretString"]["SecretStringTemplate"]
    )
    assert set(template) == {"client_id"}
    assert (
        resources["ApsisCredentialsSecret"]["Properties"]["GenerateSecretString"]["GenerateStringKey"]
        == "client_secret"
    )


# ---------------------------------------------------------------- IAM and secrets hygiene

SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^[A-Za-z0-9+/=_\-]{24,}$")


def test_no_environment_variable_carries_a_secret(template: dict[str, Any]) -> None:
    env_blocks = [template["Globals"]["Function"]["Environment"]["Variables"]]
    env_blocks += [
        f["Properties"]["Environment"]["Variables"]
        for f in functions(template["Resources"]).values()
        if "Environment" in f["Properties"]
    ]
    secret_ids = {k for k, v in template["Resources"].items() if v["Type"] == "AWS::SecretsManager::Secret"}
    for variables in env_blocks:
        for name, value in variables.items():
            text = json.dumps(value)
            assert "{{resolve:secretsmanager" not in text, name
            assert not any(ref in text for ref in secret_ids), name
            if isinstance(value, str):
                assert not SECRET_NAME.search(name), f"{name} looks like a secret setting"
                assert not SECRET_VALUE.match(value), f"{name}={value!r} looks like a secret value"


def test_no_allow_statement_uses_a_wildcard_action(template: dict[str, Any], transformed: dict[str, Any]) -> None:
    # Both what we wrote and what SAM expands its policy templates into (the roles actually deployed).
    checked = 0
    for statement in [*allow_statements(template["Resources"]), *allow_statements(transformed["Resources"])]:
        for action in as_list(statement.get("Action", [])):
            assert "*" not in action, f"wildcard action {action!r} in {statement}"
            checked += 1
    assert checked > 20


#: what each function's code path reads (functions/*/app.py and the layer code they call): which secrets, by
#: kind (efficy-sync/<integration>/<kind>), and whether it touches the state table
NEEDS = {
    "IngestWebhookFunction": ({"webhook"}, False),  # config, the webhook secret, SQS send
    "IngestOptoutFunction": ({"apsis-optout"}, False),  # config, the opt-out token, SQS send
    "ApplyChangesFunction": ({"efficy", "apsis"}, True),
    "WriteBackFunction": ({"efficy", "apsis"}, True),
    "FullSyncStepFunction": ({"efficy", "apsis"}, True),
    "SyncPageFunction": ({"efficy", "apsis"}, True),
    # the sweep runs the query tags that have a schedule of their own: configs, Efficy queries, APSIS tags
    "CleanupFunction": ({"efficy", "apsis"}, True),
    "ReconcileFunction": ({"efficy", "apsis"}, True),  # reads only: a drift count, no repair
    "SplitWebhookFunction": (set(), False),  # SQS only: bundle queue in, contact-changes queue out
}
SECRET_KIND = re.compile(re.escape(SECRET_ARN_SCOPE.removesuffix("*")) + r"\*/([a-z-]+)-\?{6}$")


def sub_text(value: Any) -> str:
    """The text of a resource as written, with SAM's `Fn::Sub: [template, {name: value}]` expanded."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"]
    if isinstance(value, list):
        template, names = value
        for name, inner in names.items():
            template = template.replace("${" + name + "}", sub_text(inner))
        value = template
    return value if isinstance(value, str) else json.dumps(value)


def role_statements(transformed: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return list(allow_statements(transformed["Resources"][f"{function}Role"]))


@pytest.mark.parametrize(("function", "needs"), sorted(NEEDS.items()))
def test_each_function_reads_only_the_secrets_and_tables_it_calls(
    transformed: dict[str, Any], function: str, needs: tuple[set[str], bool]
) -> None:
    kinds, uses_state = needs
    readable: set[str] = set()
    for statement in role_statements(transformed, function):
        actions = as_list(statement["Action"])
        if any(a.startswith("secretsmanager:") for a in actions):
            assert actions == ["secretsmanager:GetSecretValue"]
            for resource in as_list(statement["Resource"]):
                arn = sub_text(resource)
                match = SECRET_KIND.match(arn)
                assert match, f"{function} may read secrets beyond one kind: {arn}"
                readable.add(match.group(1))
    assert readable == kinds
    touches_state = any("StateTable" in json.dumps(s.get("Resource")) for s in role_statements(transformed, function))
    assert touches_state is uses_state


#: what a handler's code names -> the secret kind it reads (functions using the full-sync lifecycle are left out:
#: its steps differ per function, and the table above says what each needs)
CODE_SECRETS = {
    "webhook_secret_secret": "webhook",
    "optout_token_secret": "apsis-optout",
    "efficy_client": "efficy",
    "api_key_secret": "efficy",
    "apsis_client": "apsis",
}


@pytest.mark.parametrize("function", sorted(NEEDS))
def test_the_least_privilege_table_follows_each_handlers_code(function: str) -> None:
    code = (ROOT / "functions" / FUNCTION_FOLDERS[function] / "app.py").read_text()
    kinds, uses_state = NEEDS[function]
    lifecycle = "fullsync.wiring" in code
    assert ("state_table" in code or lifecycle) is uses_state
    if not lifecycle:
        assert {kind for name, kind in CODE_SECRETS.items() if name in code} == kinds


def test_every_function_is_in_the_least_privilege_table(resources: dict[str, Any]) -> None:
    assert set(functions(resources)) == set(NEEDS)


def test_the_template_secrets_follow_the_naming_convention_the_policies_rely_on(resources: dict[str, Any]) -> None:
    kinds = {kind for needed, _ in NEEDS.values() for kind in needed}
    names = {
        r["Properties"]["Name"]["Fn::Sub"].rsplit("/", 1)[1]
        for r in resources.values()
        if r["Type"] == "AWS::SecretsManager::Secret"
    }
    assert names == kinds


# ---------------------------------------------------------------- state machine


def test_state_machine_substitutions_cover_every_placeholder(resources: dict[str, Any]) -> None:
    props = resources["FullSyncStateMachine"]["Properties"]
    assert props["DefinitionUri"] == "statemachines/full_sync.asl.json"
    assert props["Type"] == "STANDARD"
    placeholders = set(re.findall(r"\$\{([^}]+)\}", ASL_PATH.read_text()))
    assert placeholders == set(props["DefinitionSubstitutions"])
    assert props["DefinitionSubstitutions"] == {
        "FullSyncStepFunctionArn": {"Fn::GetAtt": ["FullSyncStepFunction", "Arn"]},
        "SyncPageFunctionArn": {"Fn::GetAtt": ["SyncPageFunction", "Arn"]},
        "PagesBucket": {"Ref": "PagesBucket"},
    }


@pytest.mark.parametrize("function", ["IngestWebhookFunction", "IngestOptoutFunction"])
def test_the_public_routes_read_one_config_item_and_nothing_else_of_dynamodb(
    transformed: dict[str, Any], function: str
) -> None:
    """The routes answer the internet: a role that could Query or Scan the config table would hand every
    integration's settings to a flaw in them. They read the integration's current config by key."""
    dynamo = [
        (action, json.dumps(s["Resource"]))
        for s in role_statements(transformed, function)
        for action in as_list(s["Action"])
        if action.startswith("dynamodb:")
    ]
    assert dynamo and {action for action, _ in dynamo} == {"dynamodb:GetItem"}, dynamo
    assert all("ConfigTable" in resource for _, resource in dynamo)


def test_the_state_machine_reads_only_the_page_plans_of_the_bucket(resources: dict[str, Any]) -> None:
    """Its ItemReader reads the run's plan (plans/...json); SAM's S3ReadPolicy gave it the whole bucket."""
    props = resources["FullSyncStateMachine"]["Properties"]
    assert not any("S3ReadPolicy" in p or "S3CrudPolicy" in p for p in props["Policies"])
    reads = [s for s in allow_statements(props["Policies"]) if "s3:GetObject" in as_list(s["Action"])]
    resources_read = {sub_text(r) for s in reads for r in as_list(s["Resource"])}
    assert resources_read == {"${PagesBucket.Arn}/plans/*", "${PagesBucket.Arn}/map-results/*"}


def test_state_machine_may_invoke_its_functions_and_start_its_children(resources: dict[str, Any]) -> None:
    props = resources["FullSyncStateMachine"]["Properties"]
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in props["Policies"] if "LambdaInvokePolicy" in p}
    assert invoked == {"FullSyncStepFunction", "SyncPageFunction"}
    statements = list(allow_statements(props["Policies"]))
    start = [s for s in statements if "states:StartExecution" in as_list(s["Action"])]
    assert start
    assert all("stateMachine:${AWS::StackName}-full-sync" in json.dumps(s["Resource"]) for s in start)
    assert props["Name"] == {"Fn::Sub": "${AWS::StackName}-full-sync"}
    assert props["Logging"]["Destinations"]
    assert props["Tracing"]["Enabled"] is True


def test_asl_is_jsonpath_without_constructs_moto_rejects(asl: dict[str, Any]) -> None:
    text = json.dumps(asl)
    assert "JSONata" not in text
    assert "ItemBatcher" not in text
    for node in walk(asl):
        if isinstance(node, dict) and "ToleratedFailurePercentage" in node:
            assert isinstance(node["ToleratedFailurePercentage"], float)  # moto refuses an int


def test_asl_flow_and_catches(asl: dict[str, Any]) -> None:
    states = asl["States"]
    assert asl["StartAt"] == "Begin"
    chain = ["Begin", "Plan", "Pages", "PrepareSeams", "Seams", "MoreSeams"]
    for current, nxt in itertools.pairwise(chain):
        assert states[current]["Next"] == nxt
    # Seams and Tags loop while a call answers more=true (it ran out of time), then go on.
    assert states["MoreSeams"]["Default"] == "PrepareImports"
    assert [choice["Next"] for choice in states["MoreSeams"]["Choices"]] == ["Seams"]
    # Imports (import mode's collector) loops the same way, between Seams and Tags.
    assert states["PrepareImports"]["Next"] == "Imports" and states["Imports"]["Next"] == "MoreImports"
    assert states["MoreImports"]["Default"] == "PrepareTags"
    assert [choice["Next"] for choice in states["MoreImports"]["Choices"]] == ["Imports"]
    assert states["Imports"]["Parameters"]["Payload"]["step"] == "imports"
    assert states["PrepareTags"]["Next"] == "Tags" and states["Tags"]["Next"] == "MoreTags"
    assert states["MoreTags"]["Default"] == "RemovalGate"
    assert [choice["Next"] for choice in states["MoreTags"]["Choices"]] == ["Tags"]
    # The blast-radius breaker: the gate halts the run (HaltRun, then success: the outcome is the run's) or
    # releases the held removals (a loop like Tags) before Finish.
    assert states["RemovalGate"]["Next"] == "RemovalsAllowed"
    assert [c["Next"] for c in states["RemovalsAllowed"]["Choices"]] == ["HaltRun"]
    assert states["RemovalsAllowed"]["Default"] == "PrepareReleaseRemovals"
    assert states[states["HaltRun"]["Next"]]["Type"] == "Succeed"
    assert states["PrepareReleaseRemovals"]["Next"] == "ReleaseRemovals"
    assert states["ReleaseRemovals"]["Next"] == "MoreReleaseRemovals"
    assert states["MoreReleaseRemovals"]["Default"] == "Finish"
    chain = [
        "Begin",
        "Plan",
        "Pages",
        "Seams",
        "Imports",
        "Tags",
        "RemovalGate",
        "HaltRun",
        "ReleaseRemovals",
        "Finish",
    ]
    assert states[states["Finish"]["Next"]]["Type"] == "Succeed"
    # The refused start must not reach the fail step (it would release someone else's lock).
    (begin_catch,) = states["Begin"]["Catch"]
    assert begin_catch["ErrorEquals"] == ["SyncAlreadyRunning"]
    assert states[begin_catch["Next"]]["Type"] == "Fail"
    for name in chain[1:]:
        catch = states[name]["Catch"][-1]
        assert catch["ErrorEquals"] == ["States.ALL"]
        assert catch["Next"] == "FailRun"
        assert catch["ResultPath"] == "$.error"
    fail_run = states["FailRun"]
    assert fail_run["Parameters"]["Payload"]["step"] == "fail"
    assert fail_run["Parameters"]["Payload"]["error.$"] == "$.error"
    assert states[fail_run["Next"]]["Type"] == "Fail"
    steps = {
        name: states[name]["Parameters"]["Payload"]["step"] for name in ("Begin", "Plan", "Tags", "Finish", "FailRun")
    }
    assert steps == {"Begin": "begin", "Plan": "plan", "Tags": "tags", "Finish": "finish", "FailRun": "fail"}


def test_pages_is_a_bounded_distributed_map_over_s3(asl: dict[str, Any]) -> None:
    pages = asl["States"]["Pages"]
    assert pages["Type"] == "Map"
    assert pages["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert pages["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert pages["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert pages["ItemReader"]["Parameters"]["Bucket"] == "${PagesBucket}"
    assert pages["MaxConcurrencyPath"] == "$.run.max_concurrency"  # per integration, set by Begin
    assert set(pages["ItemSelector"]) == {"integration_id.$", "run_id.$", "dry_run.$", "page.$"}
    assert "ResultWriter" in pages
    assert pages["ResultPath"] == "$.pages"
    (worker,) = pages["ItemProcessor"]["States"].values()
    assert worker["Resource"] == "arn:aws:states:::lambda:invoke"
    assert worker["Parameters"]["FunctionName"] == "${SyncPageFunctionArn}"
    assert worker["OutputPath"] == "$.Payload"
    retried = {error for retrier in worker["Retry"] for error in retrier["ErrorEquals"]}
    assert retried >= {
        "Lambda.ServiceException",
        "Lambda.ClientExecutionTimeoutException",  # AWS's best-practice list of Lambda service errors
        "Lambda.TooManyRequestsException",
        "Lambda.SdkClientException",
        "Lambda.Unknown",  # a crash or a hard timeout: the page's chunk written so far is not lost to a failed run
        "Sandbox.Timedout",
        "TransientError",
        "EfficyUnavailable",
        "ApsisUnavailable",
        "RateLimited",
    }
    for retrier in worker["Retry"]:
        assert retrier["JitterStrategy"] == "FULL"
        assert retrier["MaxDelaySeconds"] > 0
        assert retrier["BackoffRate"] > 1


def test_asl_passes_asl_validator() -> None:
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    if not validator.exists() or shutil.which("node") is None:
        pytest.skip("asl-validator is not installed (npm ci); `make checks` runs it")
    result = subprocess.run(
        [str(validator), "--json-path", str(ASL_PATH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- alarms and dashboard


def test_alarms_notify_the_alarm_topic(resources: dict[str, Any]) -> None:
    alarms = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) >= {
        "ContactChangesDLQNotEmptyAlarm",
        "OptOutDLQNotEmptyAlarm",
        "ContactChangesAgeAlarm",
        "IngestWebhookErrorsAlarm",
        "ApplyChangesErrorsAlarm",
        "WriteBackErrorsAlarm",
        "FunctionThrottlesAlarm",
        "FullSyncFailedAlarm",
        "WebhookFreshnessAlarm",
        "WebhookRejectionsAlarm",
        "ApiServerErrorsAlarm",
        "IntegrationSyncStalledAlarm",
        "RemovalBreakerAlarm",
        "WebhookRecordsInvalidAlarm",  # left out of a 202: Efficy does not send them again
        "WebhookRelationsUnreadAlarm",  # a profile change that named no contact: waits for a full sync
        "CrmProfilesUnreadAlarm",  # profile rows that do not say in or out: consents left as they are
        "SecretPreviousVersionAcceptedAlarm",  # a caller still on a rotated secret: refused after the grace time
        "OptOutNotQueuedAlarm",  # an opt-out answered 5xx: a 500 the function answers is no Lambda error
        "OptOutIgnoredAlarm",  # an opt-out answered 202 and ignored: APSIS One never sends it again
        "OptOutAddressMismatchAlarm",  # an opt-out recorded but not written back: the key's person differs
        "CleanupErrorsAlarm",  # a sweep that could not reconcile a run fails (SweepIncomplete): runs left RUNNING
    }
    for name, props in alarms.items():
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_the_removal_breaker_alarm_watches_the_metrics_the_breaker_emits(resources: dict[str, Any]) -> None:
    metrics = resources["RemovalBreakerAlarm"]["Properties"]["Metrics"]
    watched = {m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
    assert watched == {"FullSyncHalted", "RemovalBreakerTripped", "QueryEmptied"}
    layer = Path(__file__).resolve().parents[2] / "layers" / "shared" / "python" / "efficy_sync"
    emitted = "".join(
        (layer / module).read_text() for module in ("fullsync/breaker.py", "store/removals.py", "fullsync/tags.py")
    )
    assert all(f'"{name}"' in emitted for name in watched)


def test_the_ignored_opt_out_alarm_watches_what_the_route_emits(resources: dict[str, Any]) -> None:
    """An ignored opt-out is answered 202, so APSIS One never resends it: the alarm is all that tells anyone, and
    it must name the metric, namespace and service dimension the route's code publishes."""
    from efficy_sync.observability import NAMESPACE, SERVICE

    route = (ROOT / "functions" / "ingest_optout" / "app.py").read_text()
    (emitted,) = re.findall(r'add_metric\(name="(\w+)", unit=MetricUnit.Count, value=result.ignored_events\)', route)
    props = resources["OptOutIgnoredAlarm"]["Properties"]
    assert (props["Namespace"], props["MetricName"], props["Statistic"]) == (NAMESPACE, emitted, "Sum")
    assert props["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    # any ignored opt-out in a period fires it; a period without one is no alarm
    assert (props["ComparisonOperator"], props["Threshold"], props["EvaluationPeriods"]) == (
        "GreaterThanThreshold",
        0,
        1,
    )
    assert props["TreatMissingData"] == "notBreaching"
    assert props["OKActions"] == [{"Ref": "AlarmTopic"}]


def test_dlq_and_age_alarms(resources: dict[str, Any]) -> None:
    for alarm, queue in [
        ("ContactChangesDLQNotEmptyAlarm", "ContactChangesDLQ"),
        ("OptOutDLQNotEmptyAlarm", "OptOutDLQ"),
    ]:
        props = resources[alarm]["Properties"]
        assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0)
    age = resources["ContactChangesAgeAlarm"]["Properties"]
    assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert age["Threshold"] == 900


def test_freshness_alarm_breaches_when_no_webhook_arrives(resources: dict[str, Any]) -> None:
    props = resources["WebhookFreshnessAlarm"]["Properties"]
    assert (props["Namespace"], props["MetricName"], props["Statistic"]) == (
        "EfficySync",
        "WebhookRecordsAccepted",
        "Sum",
    )
    # Powertools Metrics adds the service dimension to every EMF metric; the alarm must match it exactly.
    assert props["Dimensions"] == [{"Name": "service", "Value": "efficy-sync"}]
    assert props["TreatMissingData"] == "breaching"
    assert props["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert props["Threshold"] == 0
    assert props["EvaluationPeriods"] == {"Ref": "FreshnessHours"}
    assert props["Period"] == 3600


def test_the_first_integration_has_a_sync_stalled_alarm_on_its_own_metrics(resources: dict[str, Any]) -> None:
    from efficy_sync.observability import INTEGRATION_DIMENSION, INTEGRATION_METRICS

    props = resources["IntegrationSyncStalledAlarm"]["Properties"]
    stats = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
    assert (
        {s["Metric"]["MetricName"] for s in stats.values()}
        == {
            "WebhookRecordsAccepted",
            "PersonsProcessed",
        }
        <= INTEGRATION_METRICS
    )
    for stat in stats.values():
        # exactly the dimension set the per-integration EMF documents carry
        assert stat["Metric"]["Dimensions"] == [
            {"Name": INTEGRATION_DIMENSION, "Value": {"Ref": "IntegrationId"}},
            {"Name": "service", "Value": "efficy-sync"},
        ]
        assert (stat["Stat"], stat["Period"]) == ("Sum", 3600)
    (expression,) = [m for m in props["Metrics"] if m.get("ReturnData")]
    assert "FILL(webhooks, 0) > 0" in expression["Expression"]
    assert "FILL(processed, 0) == 0" in expression["Expression"]
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["TreatMissingData"]) == (3, 3, "notBreaching")


def test_full_sync_failed_alarm_watches_the_state_machine(resources: dict[str, Any]) -> None:
    text = json.dumps(resources["FullSyncFailedAlarm"]["Properties"])
    assert '"ExecutionsFailed"' in text
    assert '{"Ref": "FullSyncStateMachine"}' in text


def test_dashboard_body_is_valid_json_with_the_key_metrics(resources: dict[str, Any]) -> None:
    body, variables = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    for name in names:
        defined = name in variables or name.startswith("AWS::") or name.split(".")[0] in resources
        assert defined, f"${{{name}}} is not defined"
    rendered = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    metrics = {m[1] for widget in rendered["widgets"] for m in widget["properties"].get("metrics", []) if len(m) > 1}
    assert metrics >= {
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "Duration",
        "PersonsSynced",
        "PersonsSkipped",
        "PersonsFailed",
        "ApsisCalls",
        "Apsis429",
    }


def _dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    body, _ = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(body.replace("${AWS::Region}", "eu-west-1"))


def test_dashboard_shows_the_optout_write_back(resources: dict[str, Any]) -> None:
    widget = next(w for w in _dashboard(resources)["widgets"] if w["properties"].get("title") == "Opt-out write-back")
    names = {m[1] for m in widget["properties"]["metrics"]}
    assert names >= {"OptOutAccepted", "OptOutsWrittenBack", "OptOutRetried", "ApproximateNumberOfMessagesVisible"}


def test_dashboard_alarm_widget_shows_every_alarm(resources: dict[str, Any]) -> None:
    widget = next(w for w in _dashboard(resources)["widgets"] if w["type"] == "alarm")
    shown = {re.fullmatch(r"\$\{(\w+)\.Arn\}", arn).group(1) for arn in widget["properties"]["alarms"]}
    alarms = {k for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert shown == alarms


def test_dashboard_has_a_per_integration_view(resources: dict[str, Any]) -> None:
    """SEARCH over the integration_id dimension: one line per integration, none to add by hand."""
    searched: set[str] = set()
    for widget in _dashboard(resources)["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            expression = metric[0].get("expression", "") if isinstance(metric[0], dict) else ""
            found = re.fullmatch(
                r"SEARCH\('\{EfficySync,integration_id,service\} MetricName=\"(\w+)\"', 'Sum', 300\)", expression
            )
            if found:
                searched.add(found.group(1))
    assert searched >= {"PersonsFailed", "PersonsSynced", "WebhookRecordsAccepted", "ApsisCalls", "Apsis429"}


def _runbook_query_names() -> set[str]:
    """The saved queries docs/runbook.md names: `<stack>/name` in its "Saved queries" table."""
    section = (ROOT / "docs" / "runbook.md").read_text().split("## Saved Logs Insights queries", 1)[1].split("\n## ")[0]
    return set(re.findall(r"^\| `<stack>/([a-z-]+)` \|", section, flags=re.MULTILINE))


def test_runbook_queries_are_saved_query_definitions(resources: dict[str, Any]) -> None:
    queries = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::Logs::QueryDefinition"}
    names = {}
    for logical_id, props in queries.items():
        found = re.fullmatch(r"\$\{AWS::StackName\}/([a-z-]+)", props["Name"]["Fn::Sub"])
        assert found, logical_id
        names[found.group(1)] = props
        assert props["LogGroupNames"] and all(set(g) == {"Ref"} for g in props["LogGroupNames"]), logical_id
        assert all(resources[g["Ref"]]["Type"] == "AWS::Logs::LogGroup" for g in props["LogGroupNames"])
    assert set(names) == _runbook_query_names() and len(names) >= 5
    functions = {f"{f.removesuffix('Function')}LogGroup" for f in FUNCTION_FOLDERS}
    assert {g["Ref"] for g in names["warnings-and-failures"]["LogGroupNames"]} == functions
    assert 'filter level in ["WARNING", "ERROR"] or result = "failed"' in names["warnings-and-failures"]["QueryString"]
    assert "by integration_id, error_category" in names["failures-by-integration"]["QueryString"]
    assert names["api-refusals"]["LogGroupNames"] == [{"Ref": "ApiAccessLogGroup"}]
    assert {g["Ref"] for g in names["follow-one-change"]["LogGroupNames"]} == functions
    assert "filter correlation_id like" in names["follow-one-change"]["QueryString"]


def test_every_function_is_traced_and_the_local_stack_is_not(template: dict[str, Any]) -> None:
    """Issue 14.1's decision: X-Ray on (Globals), each handler wrapped by the Tracer without response or error
    capture, and the local stack (no X-Ray daemon) with tracing disabled."""
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    for folder in FUNCTION_FOLDERS.values():
        source = (ROOT / "functions" / folder / "app.py").read_text()
        assert "\n@capture_handler\n" in source, folder
    tracing = (ROOT / "layers" / "shared" / "python" / "efficy_sync" / "tracing.py").read_text()
    assert "capture_response=False, capture_error=False" in tracing
    local = (ROOT / "tools" / "efficy_sync_tools" / "local" / "stack.py").read_text()
    assert 'os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"' in local


def test_state_table_has_the_sparse_health_index(resources: dict[str, Any]) -> None:
    from efficy_sync.store.persons import HEALTH_INDEX, HEALTH_PK, HEALTH_SK

    props = resources["StateTable"]["Properties"]
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == HEALTH_INDEX
    assert index["KeySchema"] == [
        {"AttributeName": HEALTH_PK, "KeyType": "HASH"},
        {"AttributeName": HEALTH_SK, "KeyType": "RANGE"},
    ]
    assert set(index["Projection"]["NonKeyAttributes"]) == {"doc", "rev"}  # what the store decodes
    defined = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert defined[HEALTH_PK] == defined[HEALTH_SK] == "S"


# ---------------------------------------------------------------- tools: cfn-lint and the SAM transform


def test_cfn_lint_reports_no_errors_or_warnings() -> None:
    matches = [m for m in lint_file(TEMPLATE_PATH) if m.rule.id[0] in "EW"]
    assert matches == [], "\n".join(f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches)


def test_sam_transform_offline_creates_the_wired_resources(transformed: dict[str, Any]) -> None:
    out = transformed["Resources"]
    by_type: dict[str, set[str]] = {}
    for logical_id, resource in out.items():
        by_type.setdefault(resource["Type"], set()).add(logical_id)
    assert by_type["AWS::Lambda::Function"] == set(FUNCTION_FOLDERS)
    assert len(by_type["AWS::Lambda::LayerVersion"]) == 1
    assert by_type["AWS::StepFunctions::StateMachine"] == {"FullSyncStateMachine"}
    assert by_type["AWS::ApiGateway::RestApi"] == {"EfficySyncApi"}
    assert by_type["AWS::Lambda::EventSourceMapping"] == {
        "ApplyChangesFunctionContactChanges",
        "WriteBackFunctionOptOuts",
        "SplitWebhookFunctionBundles",
    }
    assert by_type["AWS::Events::Rule"] == {
        "CleanupFunctionExecutionEnded",
        "CleanupFunctionSweep",
        "ReconcileFunctionDriftCheck",
    }
    assert out["ReconcileFunctionDriftCheck"]["Properties"]["State"] == {"Ref": "ReconcileScheduleState"}
    esm = out["ApplyChangesFunctionContactChanges"]["Properties"]
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["ContactChangesQueue", "Arn"]}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    paths = out["EfficySyncApi"]["Properties"]["Body"]["paths"]
    assert set(paths) == set(ROUTES.values())
    assert {path: set(methods) for path, methods in paths.items()} == {
        ROUTES["IngestWebhookFunction"]: {"post"},
        ROUTES["IngestOptoutFunction"]: {"post", "get"},  # the Webhook node may send GET parameters
    }
    sweep = out["CleanupFunctionSweep"]["Properties"]
    assert sweep["ScheduleExpression"] == "rate(5 minutes)"
    assert json.loads(sweep["Targets"][0]["Input"]) == {"sweep": True}
    machine = out["FullSyncStateMachine"]["Properties"]
    assert machine["DefinitionSubstitutions"]["PagesBucket"] == {"Ref": "PagesBucket"}
    layer = out["SyncPageFunction"]["Properties"]["Layers"]
    assert layer == [{"Ref": next(iter(by_type["AWS::Lambda::LayerVersion"]))}]


# ---------------------------------------------------------------- sample events (events/)

EVENTS = ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def payload_keys(payload: dict[str, Any]) -> set[str]:
    return {key.removesuffix(".$") for key in payload}


def test_every_sample_event_is_json() -> None:
    names = sorted(p.name for p in EVENTS.glob("*.json"))
    assert len(names) >= 12
    for name in names:
        assert isinstance(load_event(name), dict), name


@pytest.mark.parametrize(
    ("name", "function"),
    [
        ("ingest_webhook.json", "IngestWebhookFunction"),
        ("ingest_webhook_header_mode.json", "IngestWebhookFunction"),
        ("ingest_optout.json", "IngestOptoutFunction"),
    ],
)
def test_api_sample_events_match_their_route(name: str, function: str) -> None:
    event = load_event(name)
    assert event["httpMethod"] == "POST"
    assert event["resource"] == ROUTES[function]
    assert event["path"] == ROUTES[function].replace("{integration_id}", event["pathParameters"]["integration_id"])
    assert isinstance(event["body"], str)
    json.loads(event["body"])


def test_sqs_sample_events() -> None:
    fifo = load_event("apply_changes.json")["Records"]
    assert fifo
    for record in fifo:
        assert record["eventSourceARN"].endswith("-contact-changes.fifo")
        body = json.loads(record["body"])
        assert record["attributes"]["MessageGroupId"] == f"{body['integration_id']}#{body['person_key']}"
        assert record["attributes"]["MessageDeduplicationId"]
    (optout,) = load_event("write_back.json")["Records"]
    assert json.loads(optout["body"])["event"] in {"email.unsubscribe", "email.abuse", "sms.unsubscribe"}


@pytest.mark.parametrize(
    ("state", "step"),
    [
        ("Begin", "begin"),
        ("Plan", "plan"),
        ("Seams", "seams"),
        ("Tags", "tags"),
        ("Finish", "finish"),
        ("FailRun", "fail"),
    ],
)
def test_step_sample_events_carry_what_the_state_machine_sends(asl: dict[str, Any], state: str, step: str) -> None:
    sample = load_event(f"full_sync_step_{step}.json")
    assert sample["step"] == step
    assert set(sample) == payload_keys(asl["States"][state]["Parameters"]["Payload"])


def test_sync_page_sample_event_is_a_map_item(asl: dict[str, Any]) -> None:
    assert set(load_event("sync_page.json")) == payload_keys(asl["States"]["Pages"]["ItemSelector"])


def test_cleanup_sample_events(resources: dict[str, Any]) -> None:
    status = load_event("cleanup_execution_status_change.json")
    (rule,) = events_of(resources, "CleanupFunction", "EventBridgeRule")
    assert status["source"] in rule["Pattern"]["source"]
    assert status["detail-type"] in rule["Pattern"]["detail-type"]
    assert status["detail"]["status"] in rule["Pattern"]["detail"]["status"]
    (schedule,) = events_of(resources, "CleanupFunction", "Schedule")
    assert load_event("cleanup_sweep.json") == json.loads(schedule["Input"])


def test_no_api_log_holds_a_query_string(resources: dict[str, Any]) -> None:
    """url_token mode puts the webhook secret in the query string: the access log records $context.path (the
    path only), and no execution logging (which would write whole requests) is switched on."""
    props = resources["EfficySyncApi"]["Properties"]
    log_format = props["AccessLogSetting"]["Format"]
    assert "$context.path" in log_format
    assert not re.search(r"querystring|requestOverride|\$input|\$method\.request", log_format, re.IGNORECASE)
    for setting in props.get("MethodSettings", []):
        assert not setting.get("DataTraceEnabled") and setting.get("LoggingLevel", "OFF") == "OFF"


def test_the_drift_check_schedule_is_off_by_default_and_sends_its_sample(resources: dict[str, Any]) -> None:
    """Issue 15: the scheduled reconcile exists but does not run until an admin turns it on."""
    from efficy_sync_tools.local.template import SamTemplate

    (schedule,) = events_of(resources, "ReconcileFunction", "Schedule")
    assert schedule["State"] == {"Ref": "ReconcileScheduleState"}
    assert schedule["Schedule"] == {"Ref": "ReconcileSchedule"}
    local = SamTemplate.load(ROOT / "template.yaml")
    assert "ReconcileFunction" not in {s.function for s in local.schedules()}  # the local stack honours DISABLED
    assert load_event("reconcile_schedule.json") == json.loads(local._value(schedule["Input"]))
    on = SamTemplate(root=ROOT, raw=copy.deepcopy(local.raw))
    on.raw["Parameters"]["ReconcileScheduleState"]["Default"] = "ENABLED"
    (enabled,) = [s for s in on.schedules() if s.function == "ReconcileFunction"]
    assert (enabled.rate_seconds, enabled.input) == (86400, {"sample": 500})


def test_the_webhook_sends_large_batches_to_the_bundle_queue_that_the_splitter_reads(resources: dict[str, Any]) -> None:
    """Without the variable the webhook never bundles (efficy_sync.bundles): a 10,000-person webhook would again
    be 1,000 SQS calls before its 202."""
    ingest = resources["IngestWebhookFunction"]["Properties"]
    assert ingest["Environment"]["Variables"]["WEBHOOK_BUNDLE_QUEUE_URL"] == {"Ref": "WebhookBundleQueue"}
    split = resources["SplitWebhookFunction"]["Properties"]
    (event,) = split["Events"].values()
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["WebhookBundleQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    redrive = resources["WebhookBundleQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookBundleDLQ", "Arn"]}


def test_the_page_worker_can_read_the_planned_query_members(resources: dict[str, Any]) -> None:
    """Pages read the run's planned query members (fullsync/query_plan.py) from the pages bucket: without the
    variable and the read permission every page would fall back to the Tags step's second pass on AWS, while
    the local stack (one environment for all functions, no IAM) would not show it."""
    page = resources["SyncPageFunction"]["Properties"]
    assert page["Environment"]["Variables"]["PAGES_BUCKET"] == {"Ref": "PagesBucket"}
    statements = [s for p in page["Policies"] if "Statement" in p for s in p["Statement"]]
    assert {
        "Sid": "ReadPlannedQueryMembers",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": {"Fn::Sub": "${PagesBucket.Arn}/plans/*"},
    } in statements


def test_the_functions_that_call_apsis_share_its_token_under_the_stack_s_own_ssm_path(template: dict[str, Any]) -> None:
    """efficy_sync/apsis_tokens.py: one token per API client for the whole stack (APSIS allows 10 token requests a
    minute per account); read, write and delete only under the stack's path, and only where APSIS is called."""
    apsis_secret = "secret:${SecretsPrefix}/*/apsis-??????"
    path = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${AWS::StackName}/apsis-token/*"
    calling, sharing = set(), set()
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for policy in resource["Properties"].get("Policies", []):
            arn = (policy.get("AWSSecretsManagerGetSecretValuePolicy") or {}).get("SecretArn", {})
            if isinstance(arn, dict) and arn.get("Fn::Sub", "").endswith(apsis_secret):
                calling.add(name)
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if statement.get("Sid") == "SharedApsisToken":
                    assert statement["Action"] == ["ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"]
                    assert statement["Resource"] == {"Fn::Sub": path}
                    sharing.add(name)
    assert calling == sharing and len(calling) == 6
    prefix = template["Globals"]["Function"]["Environment"]["Variables"]["APSIS_TOKEN_PARAMETER_PREFIX"]
    assert (
        prefix
        == template["Outputs"]["ApsisTokenParameterPrefix"]["Value"]
        == {"Fn::Sub": "/${AWS::StackName}/apsis-token"}
    )


def test_the_functions_that_call_apsis_read_and_write_the_token_refusal_record(transformed: dict[str, Any]) -> None:
    """efficy_sync/store/token_refusals.py: a refused APSIS token request is recorded in the state table, read
    by every container before it asks and deleted by one whose request succeeds; a function that cannot write it
    (reconcile only reads the table) would ask APSIS again on every one of its containers, and one that cannot
    delete it would leave a recovered account held. Reconcile may write that item kind alone (LeadingKeys)."""
    calling = [name for name, (kinds, _) in NEEDS.items() if "apsis" in kinds]
    assert len(calling) == 6
    for function in calling:
        allowed: set[str] = set()
        for statement in role_statements(transformed, function):
            if "StateTable" in json.dumps(statement.get("Resource")):
                allowed.update(as_list(statement["Action"]))
        assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"} <= allowed, function
    (scoped,) = [
        s for s in role_statements(transformed, "ReconcileFunction") if s.get("Sid") == "SharedApsisTokenRefusal"
    ]
    assert scoped["Action"] == ["dynamodb:PutItem", "dynamodb:DeleteItem"]
    assert scoped["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["TOKEN_REFUSAL#*"]}}


def _tasks(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state.get("Type") == "Task" and state.get("Resource") == "arn:aws:states:::lambda:invoke":
            yield name, state
        for nested in (state.get("ItemProcessor") or {}, *(state.get("Branches") or [])):
            yield from _tasks(nested.get("States", {}))


def test_every_lambda_task_retries_lambda_s_transient_service_errors(asl: dict[str, Any]) -> None:
    """AWS's best-practice list: a 500 from Lambda's own service must not fail a full sync."""
    tasks = dict(_tasks(asl["States"]))
    assert len(tasks) >= 8
    for name, task in tasks.items():
        retried = {error for retrier in task.get("Retry", []) for error in retrier["ErrorEquals"]}
        assert retried >= {
            "Lambda.ServiceException",
            "Lambda.ClientExecutionTimeoutException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
        }, name


def _watched_custom_metrics(props: dict[str, Any]) -> set[str]:
    """The EfficySync metrics an alarm reads, directly or inside its metric math."""
    stats = [props] + [m.get("MetricStat", {}).get("Metric", {}) for m in props.get("Metrics", [])]
    return {
        s["MetricName"] for s in stats if s.get("Namespace") == "EfficySync" and isinstance(s.get("MetricName"), str)
    }


def test_every_alarm_on_our_own_metrics_watches_a_metric_the_code_emits(resources: dict[str, Any]) -> None:
    """An alarm on a name no code emits never fires, and nothing local evaluates alarms to notice."""
    root = Path(__file__).resolve().parents[2]
    code = "".join(p.read_text() for d in ("layers", "functions") for p in (root / d).rglob("*.py"))
    watched = {
        (name, metric)
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        for metric in _watched_custom_metrics(r["Properties"])
    }
    assert ("OptOutNotQueuedAlarm", "OptOutEnqueueFailed") in watched
    assert ("IngestWebhookErrorsAlarm", "WebhookEnqueueFailed") in watched  # its 500s are no Lambda errors
    silent = sorted((name, metric) for name, metric in watched if f'"{metric}"' not in code)
    assert not silent, f"alarms on metrics nothing emits: {silent}"
