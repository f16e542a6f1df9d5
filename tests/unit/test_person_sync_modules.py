"""One person's sync keeps one home per step (issue 12.4), checked over the source tree without importing it.

`person_plan` decides which APSIS calls to make, `send` makes them, `state_updates` says what the stored state
becomes, `sync` orchestrates the three. A walk of one change then goes plan -> send -> state update without
bouncing back and forth between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "shared" / "python" / "efficy_sync"
#: state-update functions: defined in state_updates.py and nowhere else (nor under their old names in sync.py)
STATE_UPDATES = {"apply_operations", "record_operation", "stamp_opt_ins", "mark_unknown", "skipped_state"}
OLD_NAMES = {"_remember", "_unknown", "_skipped_state"}


def _runtime_imports(path: Path) -> set[str]:
    """Package-relative modules `path` imports at run time (those under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in typing_only:
            module = node.module or ""
            found.add(module.removeprefix("efficy_sync.") if not node.level else module)
    return found


def test_the_planner_only_plans() -> None:
    imports = _runtime_imports(PACKAGE / "person_plan.py")
    assert not imports & {"state_updates", "sync", "send", "store.persons", "clients.apsis"}, imports


def test_state_updates_call_nobody() -> None:
    """No API, no store, no orchestration: each rule testable on its own."""
    imports = _runtime_imports(PACKAGE / "state_updates.py")
    assert not {i for i in imports if i.split(".")[0] in {"sync", "send", "store", "clients", "connections"}}, imports


def test_state_updates_live_in_one_module() -> None:
    defined = {
        (path.relative_to(PACKAGE).as_posix(), node.name)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name in STATE_UPDATES | OLD_NAMES
    }
    assert {where for where, _ in defined} == {"state_updates.py"}, sorted(defined)
    assert {name for _, name in defined} == STATE_UPDATES
