"""The package layout keeps one direction of imports (docs/architecture.md).

Every import of our own code, at module level or inside a function, is read with ``ast`` and checked against the
layer table below: a package may import its own modules and packages of a *lower* layer, never one of its own
layer or above. The module graph must also be free of cycles, and ``server/`` holds no loose modules besides the
stage facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("app", "server", "work_generator", "validator", "assimilator")

# Lower number = lower layer. Packages on the same layer are independent of each other.
LAYERS: dict[str, int] = {
    "app": 0,                   # runs on volunteers' machines: imports nothing of ours
    "server.core": 1,           # settings, config files, context, store, db, time scales, BOINC data contract
    "server.ingest": 2,
    "server.image": 3,
    "server.timeseries": 3,
    "server.transients": 4,     # difference imaging, detection, real/bogus classifier, cross-match, alerts
    "server.ttv": 4,
    "server.synth": 4,
    "server.transients": 5,     # references, ZOGY difference imaging, candidates, cross-match, alerts
    "work_generator": 5,
    "validator": 5,
    "assimilator": 6,
    "server.boinc": 7,
    "server.web": 8,
    "server.pipeline": 9,
    "server.queue": 10,         # Celery tasks over the stage runner, campaigns and ingest
    "server.stages": 10,
    "server.cli": 11,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "server":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "server"


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports() -> dict[str, set[str]]:
    """module -> our modules it imports (``from pkg import mod`` counted as ``pkg.mod`` when that is a module)."""
    files = [p for top in OURS for p in (ROOT / top).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                           for a in node.names]
            for target in targets:
                if target.split(".")[0] in OURS:
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != name:
                        deps.add(target)
        graph[name] = deps
    return graph


GRAPH = _imports()


def test_every_package_of_ours_has_a_layer():
    missing = sorted({_package_of(m) for m in GRAPH} - set(LAYERS) - {"server"})
    assert not missing, f"add these packages to LAYERS (and docs/architecture.md): {missing}"


def test_no_import_goes_up_or_sideways_between_packages():
    bad = []
    for module, deps in GRAPH.items():
        src = _package_of(module)
        for dep in deps:
            dst = _package_of(dep)
            if dst == src or dst == "server":
                continue
            if LAYERS[dst] >= LAYERS[src]:
                bad.append(f"{module} ({src}, layer {LAYERS[src]}) imports {dep} ({dst}, layer {LAYERS[dst]})")
    assert not bad, "\n".join(sorted(bad))


def test_the_volunteer_app_imports_nothing_else_of_ours():
    leaks = [f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] == "app"
             for d in deps if d.split(".")[0] != "app"]
    assert not leaks


def test_the_module_import_graph_has_no_cycles():
    # A package's __init__ is imported before its submodules, so "pkg -> pkg.sub" edges are not cycles of ours.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_server_top_level_holds_only_the_facade_the_cli_and_subpackages():
    loose = sorted(p.name for p in (ROOT / "server").glob("*.py") if p.name not in {"__init__.py", "stages.py"})
    assert not loose, f"move these into a subpackage: {loose}"
    for pkg in (ROOT / "server").iterdir():
        if pkg.is_dir() and pkg.name != "__pycache__" and any(pkg.glob("*.py")):
            assert (pkg / "__init__.py").is_file(), f"{pkg} has modules but no __init__.py"
            doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
            assert doc, f"server/{pkg.name}/__init__.py needs a docstring saying what the package is"


@pytest.mark.parametrize("module", ["server.stages", "server.cli"])
def test_the_facade_and_the_cli_import_cleanly(module):
    __import__(module)
