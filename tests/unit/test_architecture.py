"""The shape of the shipped code (issue 12), checked over the source tree: no AWS, no imports of the code itself.

Shipped = what Lambda runs: the shared layer and the handlers. Each allow-list below names today's exceptions
with the reason; it may only shrink (a test fails on an entry that no longer needs to be there).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "shared" / "python"
PACKAGE = LAYER / "efficy_sync"
SHIPPED = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "functions").glob("*/app.py")])
MAX_LINES = 450

#: modules over MAX_LINES that other work in flight edits; the lead splits them after merging
TOO_LONG_FOR_NOW: set[str] = set()
#: the orchestration layer: modules below it (the domain, clients, stores) never import from it
UPPER = re.compile(r"^efficy_sync\.(worker|fullsync)(\.|$)")
_DYNAMODB = re.compile(r"""\b(client|resource)\(\s*["']dynamodb["']""")
#: a hand-written DynamoDB attribute value ({"S": ...}): the store's one helper (store/dynamo.py) writes them
_ATTRIBUTE_LITERAL = re.compile(r"""\{\s*["'](S|N|B|BOOL|NULL|M|L|SS|NS|BS)["']\s*:""")


def _name(path: Path) -> str:
    return path.relative_to(LAYER).as_posix() if path.is_relative_to(LAYER) else path.relative_to(ROOT).as_posix()


def _module(path: Path) -> str:
    parts = list(path.relative_to(LAYER).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports, at any depth (a lazy import inside a function counts too),
    except those only imported for the type checker."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    own = _module(path)
    package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found |= {c for c in (target, *(f"{target}.{a.name}" for a in node.names)) if c in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {own}


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(p) for p in files}
    return {_module(p): _imports(p, modules) for p in files}


def test_no_shipped_module_is_over_450_lines() -> None:
    lengths = {_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in SHIPPED}
    too_long = {name for name, count in lengths.items() if count > MAX_LINES}
    assert too_long <= TOO_LONG_FOR_NOW, {n: lengths[n] for n in sorted(too_long - TOO_LONG_FOR_NOW)}
    assert all(name in lengths for name in TOO_LONG_FOR_NOW), "an allow-listed module no longer exists"


def test_dynamodb_is_called_only_under_store() -> None:
    calling = {_name(p) for p in SHIPPED if _DYNAMODB.search(p.read_text(encoding="utf-8"))}
    outside = {name for name in calling if not name.startswith("efficy_sync/store/")}
    assert not outside, sorted(outside)
    assert "efficy_sync/store/persons.py" in calling  # the check finds the calls where they are


def test_dynamodb_values_are_written_by_the_one_helper() -> None:
    """No hand-written `{"S": ...}` in the shipped code: store/dynamo.py turns Python values into DynamoDB's
    (boto3's TypeSerializer), so an item's shape cannot drift between a writer and a reader. The helper itself
    writes strings, booleans and integers without the serializer (a page's CPU); test_store_dynamo checks that
    it writes exactly what TypeSerializer writes."""
    literal = [_name(p) for p in SHIPPED if _ATTRIBUTE_LITERAL.search(p.read_text(encoding="utf-8"))]
    assert literal == ["efficy_sync/store/dynamo.py"], literal


def test_no_in_memory_store_is_shipped() -> None:
    """The tests' stand-ins live in tests/ (tests/memory_store.py), not in what Lambda runs."""
    stand_ins = [
        f"{_name(path)}: {node.name}"
        for path in SHIPPED
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and re.match(r"(In)?Memory|Fake", node.name)
    ]
    assert stand_ins == [], stand_ins


def test_nothing_below_worker_and_fullsync_imports_them() -> None:
    upward = {
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if not UPPER.match(module)
        for target in targets
        if UPPER.match(target)
    }
    assert not upward, sorted(upward)


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_one_logging_path() -> None:
    """Every module logs through observability's PII-scrubbing logger; a stdlib logger would bypass it. Only
    observability.py reaches another logger: urllib3's, to scrub what it logs of a request (its retries)."""
    stdlib = [_name(p) for p in SHIPPED if re.search(r"logging\.getLogger\(", p.read_text(encoding="utf-8"))]
    assert stdlib == ["efficy_sync/observability.py"], stdlib
    owned = re.findall(r"logging\.getLogger\(([^)]*)\)", (PACKAGE / "observability.py").read_text())
    assert owned == ['"urllib3.connectionpool"'], owned


def test_the_checks_see_what_they_look_for() -> None:
    """Guards the guards: the import graph and the patterns find what is really there."""
    graph = _graph()
    assert "efficy_sync.config.model" in graph["efficy_sync.config"]
    assert "efficy_sync.fullsync.parking" in graph["efficy_sync.worker"]
    assert _DYNAMODB.search('client("dynamodb").query(') and not _DYNAMODB.search('client("s3")')
    assert _ATTRIBUTE_LITERAL.search('Key={"pk": {"S": pk}}') and not _ATTRIBUTE_LITERAL.search('{"Sid": "x"}')


def test_test_modules_have_unique_names() -> None:
    """The test folders are not packages, so pytest imports test modules by basename: two files of one name in
    tests/unit, tests/integration and tests/e2e make the second fail to collect ("import file mismatch")."""
    names = [path.name for path in (ROOT / "tests").glob("*/test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
