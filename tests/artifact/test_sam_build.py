"""The deployable artifact: what `sam build` puts in .aws-sam/build is what Lambda runs.

Each handler is imported in a fresh interpreter laid out as Lambda lays it out: on sys.path only the built
function folder, the built layer's `python/` (Lambda's /opt/python) and the standard library. Two kinds of
package may come from this host's site-packages instead, and only those: the runtime's own packages where
the layer has none (it ships its own pinned boto3, botocore and s3transfer: see
layers/shared/python/requirements.txt, and the last test here), and the layer's packages with compiled parts (pydantic_core, ...), whose built copies are arm64 binaries this
host cannot load; their host version must equal the layer's. Anything else missing from the layer fails the
import here as it would on Lambda.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from efficy_sync import gc_policy
from efficy_sync_tools.local.template import SamTemplate
from packaging.requirements import Requirement

from bench.coldstart import DUMMY_ENV

pytestmark = pytest.mark.timeout(900)  # the first test waits for `make build` (about a minute, more on a cold cache)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = SamTemplate.load(ROOT / "template.yaml")
FUNCTIONS = sorted(TEMPLATE.functions())
LAYER_ID = "SharedLayer"
REQUIREMENTS = ROOT / "layers" / "shared" / "python" / "requirements.txt"
#: top-level modules of Lambda's python3.11 runtime that the layer leaves to it (boto3 and what it imports)
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "dateutil", "jmespath", "six", "urllib3"}
#: distributions of those that our code may import directly without listing them in the layer's requirements
RUNTIME_PROVIDED_DISTRIBUTIONS = {"boto3", "botocore"}
HOST_SITE = sysconfig.get_paths()["purelib"]

_PROBE = r"""
import gc, importlib, importlib.abc, importlib.machinery, json, sys

cfg = json.loads(sys.argv[1])
sys.path[:0] = [cfg["function_dir"], cfg["layer"]]
finder = importlib.machinery.PathFinder
compiled = []


def compiles(event, args):
    # importlib compiles a source whose byte code is missing or stale: from the artifact, that is each cold start
    if event == "compile" and isinstance(args[1], str) and args[1].startswith(cfg["artifact"]):
        compiled.append(args[1])


sys.addaudithook(compiles)


class HostPackages(importlib.abc.MetaPathFinder):
    # The only doors to the host's site-packages: the runtime's own packages (where the layer has none) and
    # the layer's compiled packages. Submodules follow their package's __path__ and never come here.

    def find_spec(self, name, path=None, target=None):
        if path is not None:
            return None
        if name in cfg["compiled"]:
            return finder.find_spec(name, [cfg["host_site"]])
        if name in cfg["runtime"] and finder.find_spec(name, [cfg["layer"]]) is None:
            return finder.find_spec(name, [cfg["host_site"]])
        return None


sys.meta_path.insert(0, HostPackages())
for module in cfg["modules"]:
    importlib.import_module(module)
if cfg["handler"]:
    module, attr = cfg["handler"].rsplit(".", 1)
    handler = getattr(importlib.import_module(module), attr)
    assert callable(handler), cfg["handler"] + " is not callable"
import efficy_sync

files = {name: getattr(mod, "__file__", None) for name, mod in list(sys.modules.items()) if "." not in name}
patcher = sys.modules.get("aws_xray_sdk.core.patcher")
patched = sorted(getattr(patcher, "_PATCHED_MODULES", ())) if patcher else []
print(json.dumps({"efficy_sync": efficy_sync.__file__, "top_level": files, "xray_patched": patched, "gc": gc.get_threshold(), "compiled": compiled}))
"""


def _layer(built: Path) -> Path:
    return built / LAYER_ID / "python"


def _compiled_packages(layer: Path) -> set[str]:
    """Top-level packages of the layer that hold native extensions (built for arm64)."""
    return {p.relative_to(layer).parts[0].split(".")[0] for p in layer.rglob("*.so")}


#: what Lambda sets for a function with `Tracing: Active` (the template's): powertools' Tracer then imports the X-Ray
#: SDK and patches botocore at import time, a path the local stack never takes (tracing is off there)
LAMBDA_TRACED = {
    "AWS_LAMBDA_FUNCTION_NAME": "efficy-sync-probe",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
    "LAMBDA_TASK_ROOT": "/var/task",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
}


def _probe(
    built: Path, function_dir: Path, handler: str | None, modules: list[str], *, traced: bool = False
) -> dict[str, Any]:
    layer = _layer(built)
    cfg = {
        "artifact": str(built),
        "function_dir": str(function_dir),
        "layer": str(layer),
        "host_site": HOST_SITE,
        "compiled": sorted(_compiled_packages(layer)),
        "runtime": sorted(RUNTIME_PROVIDED),
        "handler": handler,
        "modules": modules,
    }
    # -I -S: no site-packages, no PYTHONPATH, no editable install of efficy_sync: only what the probe adds;
    # -B: nothing written into the artifact (read-only on Lambda; sam deploy zips the folders), so what loads
    # without compiling is the byte code `make build` put there
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", _PROBE, json.dumps(cfg)],
        cwd=function_dir,
        env={"PATH": "/usr/bin:/bin", **_env(traced)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"import from the build failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env(traced: bool) -> dict[str, str]:
    if not traced:
        return dict(DUMMY_ENV)
    return {**{k: v for k, v in DUMMY_ENV.items() if k != "POWERTOOLS_TRACE_DISABLED"}, **LAMBDA_TRACED}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> dict[str, Requirement]:
    reqs = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[_canonical(req.name)] = req
    return reqs


def _layer_distributions(layer: Path) -> dict[str, metadata.Distribution]:
    return {_canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(layer)])}


def _module_owners(layer: Path) -> dict[str, str]:
    """Top-level import name -> canonical distribution name, from the layer's RECORD files."""
    owners: dict[str, str] = {}
    for dist_name, dist in _layer_distributions(layer).items():
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
                continue
            owners[top.split(".")[0]] = dist_name
    return owners


def _imported_names(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import, wherever it stands (functions included), except under
    `if TYPE_CHECKING:`, which never runs."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _third_party_imports(built: Path) -> dict[str, set[str]]:
    """Import name -> the built files that import it, for every name that is neither the standard library
    nor our own code (efficy_sync, or a module of the function's own folder)."""
    out: dict[str, set[str]] = {}
    roots = [(_layer(built) / "efficy_sync", set())]
    for logical_id in FUNCTIONS:
        fn_dir = built / logical_id
        roots.append((fn_dir, {p.stem for p in fn_dir.glob("*.py")} | {p.name for p in fn_dir.iterdir() if p.is_dir()}))
    for root, own in roots:
        for path in sorted(root.rglob("*.py")):
            for name in _imported_names(ast.parse(path.read_text(), str(path))):
                if name in sys.stdlib_module_names or name == "efficy_sync" or name in own:
                    continue
                out.setdefault(name, set()).add(path.relative_to(built).as_posix())
    return out


def test_the_layer_holds_efficy_sync_where_lambda_looks(built: Path) -> None:
    """Lambda puts /opt/python on sys.path: the package must be python/efficy_sync, not python/python/..."""
    layer = _layer(built)
    assert (layer / "efficy_sync" / "__init__.py").is_file(), sorted(p.name for p in layer.iterdir())
    assert not (layer / "python").exists(), "the layer's content is nested one python/ too deep"
    built_template = (built / "template.yaml").read_text()
    assert "ContentUri: SharedLayer" in built_template


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced-as-on-lambda"])
@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_handler_imports_from_the_built_artifact(built: Path, logical_id: str, traced: bool) -> None:
    spec = TEMPLATE.functions()[logical_id]
    function_dir = built / logical_id
    assert (function_dir / (spec.handler.rsplit(".", 1)[0].replace(".", "/") + ".py")).is_file()
    loaded = _probe(built, function_dir, spec.handler, [], traced=traced)
    layer = _layer(built).resolve()
    assert Path(loaded["efficy_sync"]).resolve().is_relative_to(layer / "efficy_sync")
    _assert_loaded_from_layer_or_runtime(loaded["top_level"], built, function_dir)
    assert loaded["gc"] == list(gc_policy.THRESHOLDS)  # set by the handler's import (gc_policy says why)
    assert loaded["compiled"] == []  # every module came from the artifact's byte code (the Makefile says why)
    if traced:  # as on Lambda: the X-Ray SDK from the layer, botocore patched (tracing.PATCHED_MODULES)
        assert Path(loaded["top_level"]["aws_xray_sdk"]).resolve().is_relative_to(layer)
        assert loaded["xray_patched"] == ["botocore"], loaded["xray_patched"]
    else:
        assert loaded["xray_patched"] == []


def test_every_layer_module_imports_from_the_built_artifact(built: Path) -> None:
    """Modules no handler imports at cold start (lazy paths) must load from the layer all the same."""
    package = _layer(built) / "efficy_sync"
    modules = sorted(
        ".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in package.rglob("*.py")
    )
    assert "efficy_sync.fullsync.lifecycle" in modules
    any_function = built / FUNCTIONS[0]
    loaded = _probe(built, any_function, None, modules)
    _assert_loaded_from_layer_or_runtime(loaded["top_level"], built, any_function)
    assert loaded["compiled"] == []


def test_the_byte_code_in_the_artifact_is_for_lambda_s_python_and_never_judged_stale(built: Path) -> None:
    """A cold start on Lambda cannot write byte code (read-only folders): the artifact's own must be for the
    runtime's Python (the template's python3.11, this interpreter's magic number) and hash-based without a
    source check, since the zip that sam deploy uploads keeps modification times to two seconds only."""
    import importlib.util

    assert TEMPLATE.raw["Globals"]["Function"]["Runtime"] == f"python{sys.version_info[0]}.{sys.version_info[1]}"
    sources = [p for p in built.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(sources) > 500  # the layer's packages and every function
    missing = [p for p in sources if not Path(importlib.util.cache_from_source(str(p))).is_file()]
    assert missing == []
    headers = {Path(importlib.util.cache_from_source(str(p))).read_bytes()[:8] for p in sources}
    unchecked_hash = (0b01).to_bytes(4, "little")  # PEP 552: hash-based, source not checked
    assert headers == {importlib.util.MAGIC_NUMBER + unchecked_hash}


def _assert_loaded_from_layer_or_runtime(files: dict[str, str | None], built: Path, function_dir: Path) -> None:
    layer = _layer(built).resolve()
    host_allowed = _compiled_packages(layer) | RUNTIME_PROVIDED
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for name, file in files.items():
        if file is None or name in sys.builtin_module_names:
            continue  # built-in or namespace module
        path = Path(file).resolve()
        if path.is_relative_to(layer) or path.is_relative_to(function_dir.resolve()):
            continue
        if path.is_relative_to(Path(HOST_SITE).resolve()):
            assert name in host_allowed, f"{name} came from the host, not from the layer: {path}"
            continue
        assert path.is_relative_to(stdlib), f"{name} loaded from outside the artifact: {path}"


def test_compiled_packages_on_the_host_match_the_layer(built: Path) -> None:
    """The handler test loads these from the host: they must be the versions the layer ships for arm64."""
    layer = _layer(built)
    owners = _module_owners(layer)
    dists = _layer_distributions(layer)
    compiled = _compiled_packages(layer)
    assert "pydantic_core" in compiled
    for name in sorted(compiled):
        dist = owners[name]
        assert metadata.version(dist) == dists[dist].version, f"{dist}: host and layer versions differ"
    arm64 = [p.name for p in layer.rglob("*.so") if "aarch64" in p.name]
    assert arm64, "the layer's native extensions are not built for arm64 (the template's architecture)"


def test_every_third_party_import_is_a_layer_requirement(built: Path) -> None:
    """Every package our built code imports (cold path or lazily) is pinned in the layer's requirements,
    or is boto3/botocore, which Lambda's runtime provides. Packages that are only installed as another
    requirement's dependency may change or disappear with that requirement's next version."""
    reqs = _requirements()
    owners = _module_owners(_layer(built))
    imports = _third_party_imports(built)
    assert {"pydantic", "aws_lambda_powertools"} <= set(imports)
    undeclared = {}
    for name, where in sorted(imports.items()):
        dist = owners.get(name, _canonical(name))
        if dist in RUNTIME_PROVIDED_DISTRIBUTIONS:
            continue
        if dist not in reqs:
            undeclared[name] = sorted(where)
    assert not undeclared, f"imported but not in {REQUIREMENTS.relative_to(ROOT)}: {undeclared}"


def test_every_layer_requirement_is_pinned_and_built(built: Path) -> None:
    dists = _layer_distributions(_layer(built))
    for name, req in _requirements().items():
        pins = [s.version for s in req.specifier if s.operator == "=="]
        assert pins, f"{req}: pin it exactly"
        assert name in dists, f"{req} is missing from the built layer"
        assert dists[name].version == pins[0], f"{req}: the layer holds {dists[name].version}"


def test_the_layer_ships_boto3_botocore_and_s3transfer_as_one_matching_set(built: Path) -> None:
    """The layer's botocore (aws-xray-sdk needs one) shadows the runtime's: the boto3 and s3transfer beside it must
    be the ones it was released with, not whatever the runtime holds."""
    dists = _layer_distributions(_layer(built))
    assert {"boto3", "botocore", "s3transfer"} <= set(dists), sorted(dists)
    for dist in ("boto3", "s3transfer"):
        for line in dists[dist].requires or []:
            req = Requirement(line)
            if _canonical(req.name) in dists and not req.marker:
                version = dists[_canonical(req.name)].version
                assert req.specifier.contains(version, prereleases=True), f"{dist} needs {req}, the layer has {version}"
