"""The public API is what ``cdp`` and its layer packages export, and the layers keep to their imports
(in the manner of trio's ``test_exports.py`` and httpx's ``test_exported_members.py``)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cdp

from .helpers import ROOT

LAYERS = ("extract", "xdr", "processors", "upstream", "pipeline", "sinks", "ops", "batch", "testing")
# What the pure layers may not import, directly or through anything they load.
NOT_IN_PURE_LAYERS = ("trio", "trio_asyncio", "trio_parallel", "grpclib", "hypercorn", "quart", "quart_trio",
                      "prometheus_client", "httpx", "h2")  # fmt: skip


def test_cdp_exports_exactly_its_all() -> None:
    assert sorted(cdp.__all__) == dir(cdp)
    for name in cdp.__all__:
        value = getattr(cdp, name)
        if name == "Row":  # a type alias (Mapping[str, Any]): its __module__ is collections.abc
            continue
        module = getattr(value, "__module__", "cdp")
        assert module.startswith("cdp"), f"cdp.{name} comes from {module}"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = cdp.nope  # type: ignore[attr-defined]


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_exports_its_all_and_nothing_private(layer: str) -> None:
    module = importlib.import_module(f"cdp.{layer}")
    public = {n for n in dir(module) if not n.startswith("_")} - {"annotations"}  # dir: lazy layers list theirs
    assert public >= set(module.__all__)
    assert not [n for n in module.__all__ if n.startswith("_")]
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_private_modules_are_underscored() -> None:
    for path in (ROOT / "cdp").rglob("*.py"):
        rel = path.relative_to(ROOT / "cdp")
        if "proto" in rel.parts or rel.parts[0] == "_tools":
            continue  # betterproto's generated package; the generators run as scripts of a private package
        assert path.name in ("__init__.py", "__main__.py") or path.name.startswith("_"), f"cdp/{rel} is not _named"


def test_the_extraction_layer_loads_no_trio_asyncio_grpc_http_or_metrics() -> None:
    """Imported alone, ``cdp.extract`` (and the xdr and processors layers under it) adds none of those
    modules. stellar-sdk itself imports asyncio for its HTTP client, so that is loaded first and subtracted."""
    code = (
        "import sys, stellar_sdk; before = set(sys.modules); "
        "import cdp.extract, cdp.xdr, cdp.processors; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    added = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in added if m.split(".")[0] in NOT_IN_PURE_LAYERS + ("asyncio",)] == []
    assert "cdp.extract" in added


@pytest.mark.parametrize("module", ["cdp.__main__", "cdp.batch._task", "cdp.upstream._datastore"])
def test_what_dask_processes_load_leaves_asyncio_alone(module: str) -> None:
    """trio-asyncio replaces asyncio's loops when imported, and Dask then cannot start: neither the
    command (re-imported as the main module by every spawned Dask worker) nor a partition task, nor
    the datastore reader it uses, may load it, or grpclib with it."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in ("trio_asyncio", "grpclib")] == []


@pytest.mark.parametrize("layer", ["extract", "xdr", "processors"])
def test_pure_layers_import_nothing_async_in_their_source(layer: str) -> None:
    for path in (ROOT / "cdp" / layer).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in (*NOT_IN_PURE_LAYERS, "asyncio"), f"{path.relative_to(ROOT)} imports {name}"
                if top == "cdp":
                    assert name.split(".")[1] in (
                        "_errors",
                        "_config",
                        "_validators",
                        "_version",
                        "extract",
                        "xdr",
                        "processors",
                    ), f"{path.relative_to(ROOT)} imports {name}, a higher layer"


def test_no_hand_written_module_is_over_400_lines() -> None:
    generated = {Path("xdr/_skip.py")}
    for path in (ROOT / "cdp").rglob("*.py"):
        rel = path.relative_to(ROOT / "cdp")
        if rel in generated or "proto" in rel.parts:
            continue
        assert len(path.read_text().splitlines()) <= 420, f"cdp/{rel} has grown past ~400 lines: split it"


def _module_imports(path: Path, module: str, is_package: bool) -> set[str]:
    """The cdp modules ``module`` imports when it is loaded (not in functions, not under TYPE_CHECKING)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                break
            if isinstance(inner, ast.ImportFrom):
                base = inner.module or ""
                if inner.level:
                    parts = package.split(".")[: len(package.split(".")) - inner.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("cdp"):
                    if inner.module is not None:  # `from . import _x` loads the submodule, not the package body
                        found.add(base)
                    found.update(f"{base}.{a.name}" for a in inner.names)
            elif isinstance(inner, ast.Import):
                found.update(a.name for a in inner.names if a.name.startswith("cdp"))
    return found


def test_no_import_cycles() -> None:
    modules: dict[str, tuple[Path, bool]] = {}
    for path in (ROOT / "cdp").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        is_package = rel.name == "__init__"
        name = ".".join(rel.parts[:-1] if is_package else rel.parts)
        modules[name] = (path, is_package)
    graph = {m: {i for i in _module_imports(p, m, pkg) if i in modules and i != m} for m, (p, pkg) in modules.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*trail, module, target])
            if target not in state:
                visit(target, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
