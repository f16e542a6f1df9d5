"""One factory per API client (issue 12.2), checked over the source tree: no AWS, no import of the code itself.

`EfficyClient.from_config` and `ApsisClient.from_config` carry every setting of an integration's config (the
error codes, the profile detail, the tags path...). A client built any other way can drop one: the write-back's
own copy of the Efficy factory once lost the configured error codes. So the two factories are called in two
places only: `connections` (the Lambdas' clients, kept per config, secret and retry policy for a warm
container) and the CLI's `commands/_aws.py`; every handler, the domain and the benchmarks go through those,
and nobody keeps a client cache of their own at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "shared" / "python"
CLIENTS = {"EfficyClient", "ApsisClient"}
#: where the factories may be called, and why
FACTORY_CALLERS = {
    "efficy_sync/connections.py",  # the Lambdas' clients, kept for a warm container
    "tools/efficy_sync_tools/commands/_aws.py",  # the CLI's clients, with the impatient CLI retry policy
}
#: the cached accessors of connections.py: calling them when a module is imported would freeze a client
#: (and its secret) into that module
ACCESSORS = {"efficy_client", "apsis_client"}


def _sources() -> list[Path]:
    """What ships or runs the clients outside tests: the layer, the handlers, the CLI and local stack, benches.
    The simulators are servers, not client users."""
    files = [
        *(LAYER / "efficy_sync").rglob("*.py"),
        *(ROOT / "functions").glob("*/app.py"),
        *(ROOT / "tools" / "efficy_sync_tools").rglob("*.py"),
        *(ROOT / "bench").rglob("*.py"),
    ]
    return sorted(p for p in files if "sims" not in p.relative_to(ROOT).parts)


def _name(path: Path) -> str:
    return path.relative_to(LAYER).as_posix() if path.is_relative_to(LAYER) else path.relative_to(ROOT).as_posix()


def _called(node: ast.Call) -> str:
    """`EfficyClient` for `EfficyClient(...)`, `EfficyClient.from_config` for `x.EfficyClient.from_config(...)`."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        owner = func.value
        base = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        return f"{base}.{func.attr}" if base else func.attr
    return ""


def _run_at_import(node: ast.AST) -> list[ast.AST]:
    """`node` and what under it runs when the module is imported: not the bodies of functions and lambdas."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return []
    return [node, *(n for child in ast.iter_child_nodes(node) for n in _run_at_import(child))]


def violations(name: str, source: str) -> list[str]:
    """What in one module builds or keeps a client outside the two factories' callers."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = _called(node)
        if called.split(".")[-1] in CLIENTS:
            found.append(f"{name}:{node.lineno} builds {called}(...) directly: use {called}.from_config")
        elif called in {f"{c}.from_config" for c in CLIENTS} and name not in FACTORY_CALLERS:
            found.append(f"{name}:{node.lineno} calls {called}: use connections (Lambda) or commands/_aws (CLI)")
    for statement in tree.body:  # module level: runs once per process, so anything kept here is a cache
        for node in _run_at_import(statement):
            if isinstance(node, ast.Call) and _called(node).split(".")[-1] in ACCESSORS | {"from_config"}:
                found.append(f"{name}:{node.lineno} builds a client at import: ask for it per use")
        if isinstance(statement, ast.AnnAssign | ast.Assign) and name != "efficy_sync/connections.py":
            names = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(statement) if isinstance(n, ast.Attribute)}
            if names & CLIENTS:
                found.append(f"{name}:{statement.lineno} keeps clients at module level: {ast.unparse(statement)[:80]}")
    return found


def test_clients_are_built_only_by_their_factories() -> None:
    found = [v for path in _sources() for v in violations(_name(path), path.read_text(encoding="utf-8"))]
    assert not found, found


def test_the_factory_callers_still_call_the_factories() -> None:
    """The allow-list may not go stale: each place named there really calls both factories."""
    for name in FACTORY_CALLERS:
        path = LAYER / name if name.startswith("efficy_sync/") else ROOT / name
        calls = {_called(n) for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)}
        assert {f"{c}.from_config" for c in CLIENTS} <= calls, name


def test_every_lambda_gets_its_clients_from_connections() -> None:
    """A handler that needs a client asks connections for it (one cache per container, one secret read)."""
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        text = app.read_text(encoding="utf-8")
        uses = {a for a in ACCESSORS if f"{a}(" in text}
        if uses:
            assert "from efficy_sync.connections import" in text, _name(app)


def test_the_check_finds_what_it_looks_for() -> None:
    """Guards the guard: each way of going around the factories is reported."""
    direct = "from efficy_sync.clients.efficy import EfficyClient\ndef f(cfg):\n    return EfficyClient(cfg.url, 'k')\n"
    assert violations("functions/x/app.py", direct)
    qualified = (
        "import efficy_sync.clients.apsis as a\ndef f():\n    return a.ApsisClient('u', 'i', 's', section='x')\n"
    )
    assert violations("functions/x/app.py", qualified)
    copied = "def f(cfg):\n    return ApsisClient.from_config(cfg, credentials={})\n"
    assert violations("functions/x/app.py", copied)
    assert not violations("efficy_sync/connections.py", copied)
    cached = "_clients: dict[str, EfficyClient] = {}\n"
    assert violations("functions/x/app.py", cached)
    at_import = "from efficy_sync.connections import efficy_client\nEFFICY = efficy_client(CFG)\n"
    assert violations("functions/x/app.py", at_import)
    per_use = "from efficy_sync.connections import efficy_client\ndef f(cfg):\n    return efficy_client(cfg)\n"
    assert not violations("functions/x/app.py", per_use)
