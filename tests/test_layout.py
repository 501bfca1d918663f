"""The package's import graph has no cycles, and executors never import the dispatcher."""
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


def _imports() -> dict[str, set[str]]:
    """Every intra-package import, at module level or inside functions (both are dependencies)."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
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


def test_executors_import_what_they_share_not_the_dispatcher():
    graph = _imports()
    for name in ("hovit_nas.executors.local", "hovit_nas.executors.ray"):
        assert "hovit_nas.search" not in graph[name] and "hovit_nas.executors.common" in graph[name]
    assert not any("hovit_nas.device" == d for d in graph["hovit_nas.models.hovit"])
    assert "hovit_nas.device" in graph["hovit_nas.train"]  # training receives a guard (device.py) ...
    assert not {"hovit_nas.latency", "hovit_nas.study"} & graph["hovit_nas.train"]  # ... not the timing
