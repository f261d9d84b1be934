"""The library's structure: no import circle among the modules of ``networks/`` and
``utilities/`` (imports inside functions count), no library module importing a script, and
``networks`` below ``utilities``. Read from the source with ``ast``, nothing imported."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("networks", "utilities")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_script(tree: ast.Module) -> bool:
    """Whether the module has an ``if __name__ == "__main__":`` block."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            return True
    return False


def _imported(name: str, path: Path, tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (module level, inside
    functions, under ``TYPE_CHECKING``): ``from a.b import c`` counts as ``a.b.c`` when that is
    a module, else ``a.b``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    found = set()
    for imported in names:
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        if imported and imported != name:
            found.add(imported)
    return found


def _graph() -> tuple[dict[str, set[str]], set[str]]:
    modules = _modules()
    graph, scripts = {}, set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = _imported(name, path, tree, modules)
        if _is_script(tree):
            scripts.add(name)
    return graph, scripts


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_the_graph_is_read():
    graph, scripts = _graph()
    assert "utilities.engine" in graph and "networks" in graph
    assert "utilities.checkpoints" in graph["utilities.engine"]
    assert "utilities.scores" in scripts


def test_no_import_circle():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_library_module_imports_a_script():
    """A module that is also a script (``if __name__ == "__main__"``) is imported by no module
    of the library: the library is what scripts use, not the other way round."""
    graph, scripts = _graph()
    offending = {name: sorted(graph[name] & scripts) for name in graph if graph[name] & scripts}
    assert offending == {}


def test_networks_below_utilities():
    """The networks (and the published-checkpoint key mapping) import nothing from
    ``utilities``; only a script in ``networks/`` may."""
    graph, scripts = _graph()
    offending = {name: sorted(m for m in graph[name] if m.startswith("utilities"))
                 for name in graph if name.startswith("networks") and name not in scripts}
    assert {k: v for k, v in offending.items() if v} == {}
