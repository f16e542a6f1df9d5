"""Unit tests run without moto and without the local stack: what needs either lives in tests/integration or
tests/e2e. Checked over the source, so a unit test that starts moto is caught where it is written."""

from __future__ import annotations

import ast
from pathlib import Path

UNIT = Path(__file__).resolve().parent
AWS_MODULES = ("moto", "tests.integration", "tests.e2e")  # the two folders' helpers start moto or the stack
STACK_FIXTURES = {"stack", "aws_env"}


def aws_uses(source: str) -> list[str]:
    """Why a module needs moto or the stack: the imports and the fixtures it asks for (empty: it needs neither)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith(AWS_MODULES)]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(AWS_MODULES):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module == "tests.support":
            found += [f"tests.support.{a.name}" for a in node.names if a.name in {"start_stack", "Stack"}]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            found += [f"{node.name}({a.arg})" for a in node.args.args if a.arg in STACK_FIXTURES]
    return found


def test_no_unit_test_starts_moto_or_the_local_stack() -> None:
    offenders = {p.name: uses for p in sorted(UNIT.glob("*.py")) if (uses := aws_uses(p.read_text()))}
    assert offenders == {}, "move these to tests/integration (moto) or tests/e2e (the local stack)"


def test_the_check_sees_moto_and_the_stack() -> None:
    assert aws_uses("from moto import mock_aws\n") == ["from moto import ..."]
    assert aws_uses("import moto.dynamodb\n") == ["import moto.dynamodb"]
    assert aws_uses("from tests.integration.test_fullsync_runs import aws_env\n") == [
        "from tests.integration.test_fullsync_runs import ..."
    ]
    assert aws_uses("def test_x(stack, key):\n    pass\n") == ["test_x(stack)"]
    assert aws_uses("from tests.support import person, wait_for\nimport boto3\n") == []
