"""The import layers stay as DESIGN.md draws them, and no modules import each other in a circle.

  algorithms.core  <  algorithm files, tasks  <  leaderboard  <  runners

A module may import its own package and any package of a lower layer. Algorithm files import only the core (two
files can be diffed to see how the methods differ; a shared helper belongs in the core). Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("algorithms", "tasks", "leaderboard", "runners")
RANK = {"algorithms.core": 0, "algorithms": 1, "tasks": 1, "leaderboard": 2, "runners": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the four packages -> the modules of the four packages it imports."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from tasks import catalog` imports the module tasks.catalog
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names}
        graph[mod] = {t for t in targets if t.split(".")[0] in PACKAGES and t != mod}
    return graph


def layer(mod: str) -> str:
    return "algorithms.core" if mod == "algorithms.core" or mod.startswith("algorithms.core.") else mod.split(".")[0]


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(graph.items()):
        for target in sorted(targets):
            own, other = layer(mod), layer(target)
            if own == "algorithms" and other == "algorithms" and target != "algorithms":
                bad.append(f"{mod} imports {target}: algorithm files share code only through algorithms.core")
            elif own != other and RANK[other] >= RANK[own]:
                bad.append(f"{mod} imports {target}: {other} is not below {own}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_runs_up_a_layer() -> None:
    assert violations(import_graph()) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_are_for() -> None:
    """The rules flag an upward import, an algorithm file importing another, and a circle."""
    graph = {"tasks.factory": {"runners.run"}, "leaderboard.check": {"runners.records"},
             "algorithms.spot": {"algorithms.td3_bc", "algorithms.core.td3"}, "runners.run": {"tasks.factory"},
             "tasks.registry": {"tasks.catalog"}, "tasks.catalog": {"tasks.registry"}}
    assert violations(graph) == [
        "algorithms.spot imports algorithms.td3_bc: algorithm files share code only through algorithms.core",
        "leaderboard.check imports runners.records: runners is not below leaderboard",
        "tasks.factory imports runners.run: runners is not below tasks",
    ]
    assert sorted(cycles(graph)) == [["runners.run", "tasks.factory"], ["tasks.catalog", "tasks.registry"]]


def test_the_graph_sees_lazy_and_package_imports() -> None:
    graph = import_graph()
    assert "tasks.protocol" in graph["runners.run"]
    assert "tasks.catalog" in graph["tasks.registry"]  # `from tasks import catalog`
    assert "leaderboard.report" in graph["runners.cli"]  # imported inside a function
