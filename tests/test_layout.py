"""The package's import graph has no cycles, executors never import the dispatcher, and the
packages split by concern (study/, confirm/) are layered."""
import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "hovit_nas"


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:``: annotations only, never imported
    at run time (import-linter's ``exclude_type_checking_imports`` draws the same line)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports() -> dict[str, set[str]]:
    """Every intra-package import that runs, at module level or inside functions (both are
    dependencies); imports for annotations only (``if TYPE_CHECKING:``) are not."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import study` names a module
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in mods else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_only_imports_for_annotations_are_left_out_of_the_graph():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..config import RunConfig\n"
                     "from ..errors import ConfigError\ndef f():\n    from ..data import Splits\n")
    skipped = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) in _type_checking_only(tree)}
    assert skipped == {"config"}  # errors (module level) and data (inside a function) run
    assert "hovit_nas.config" not in _imports()["hovit_nas.evaluators"]  # RunConfig: an annotation there


def test_executors_import_what_they_share_not_the_dispatcher():
    graph = _imports()
    for name in ("hovit_nas.executors.local", "hovit_nas.executors.ray"):
        assert "hovit_nas.search" not in graph[name] and "hovit_nas.executors.common" in graph[name]
    assert not any("hovit_nas.device" == d for d in graph["hovit_nas.models.hovit"])
    assert "hovit_nas.device" in graph["hovit_nas.train"]  # training receives a guard (device.py) ...
    assert not {d for d in graph["hovit_nas.train"]  # ... not the timing, nor the study (any of its modules)
                if d == "hovit_nas.latency" or d == "hovit_nas.study" or d.startswith("hovit_nas.study.")}


# A package split by concern: each module imports (from its own package) only modules of the layers
# before its own; the package's __init__ re-exports them all. Every module of the package has a layer.
LAYERS = {
    "hovit_nas.study": [
        {"keys", "storage", "samplers"},  # the record's keys; URLs and the heartbeat storage; samplers
        {"failures", "creation", "budget", "commands"},  # storage failures; create/load; budget; command lines
        {"liveness", "find"},  # heartbeats and stale trials; finding and loading a study
    ],
    "hovit_nas.confirm": [
        {"figures"},  # reading a confirmation: what pareto and pin import
        {"run"},  # running one
    ],
}


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for d in graph[todo.pop()] - seen:
            seen.add(d)
            todo.append(d)
    return seen


def test_the_packages_split_by_concern_are_layered():
    graph = _imports()
    for pkg, layers in LAYERS.items():
        assert {m for m in graph if m.startswith(pkg + ".")} == {f"{pkg}.{n}" for layer in layers for n in layer}
        assert graph[pkg] == {f"{pkg}.{n}" for layer in layers for n in layer}  # __init__ re-exports each
        for i, layer in enumerate(layers):
            below = {f"{pkg}.{n}" for lower in layers[:i] for n in lower}
            for n in sorted(layer):
                inside = {d for d in graph[f"{pkg}.{n}"] if d == pkg or d.startswith(pkg + ".")}
                assert inside <= below, f"{pkg}.{n} imports {sorted(inside - below)} (not of a layer below)"


def test_the_report_reads_a_confirmation_and_never_runs_one():
    """pareto (and pin, in it) import confirm/figures.py alone; figures import no executor, trial
    or training, not even inside a function (tests/test_seams.py checks torch at run time)."""
    graph = _imports()
    assert "hovit_nas.confirm.figures" in graph["hovit_nas.pareto"]
    assert not {"hovit_nas.confirm", "hovit_nas.confirm.run"} & graph["hovit_nas.pareto"]
    for name in ("hovit_nas.confirm.figures", "hovit_nas.pareto"):
        heavy = {d for d in _reach(graph, name) if d.startswith("hovit_nas.executors")
                 or d in ("hovit_nas.confirm", "hovit_nas.confirm.run", "hovit_nas.search", "hovit_nas.trial",
                          "hovit_nas.train")}
        assert not heavy, (name, sorted(heavy))
