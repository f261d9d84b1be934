"""The library's structure: no import circle among the modules of ``networks/`` and
``utilities/`` (imports inside functions count), no library module importing a script,
``networks`` below ``utilities``, and the layers of ``utilities`` (its ``__init__`` lists them):
a module imports from its own layer and the layers below, never from one above. Read from the
source with ``ast``, nothing imported."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("networks", "utilities")
#: The subpackages of ``utilities``, lowest first.
LAYERS = ("core", "method", "data", "models", "training", "evaluation", "workflow")
#: The one script inside ``utilities/``: the paper's ``python utilities/scores.py``.
SCRIPTS_IN_LIBRARY = {"utilities.scores"}


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
    assert "utilities.training.engine" in graph and "networks" in graph
    assert "utilities.models.checkpoints" in graph["utilities.training.engine"]
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


def _layer(module: str) -> int | None:
    """The layer index of a ``utilities.<layer>...`` module (``networks`` sits below them all)."""
    parts = module.split(".")
    if parts[0] == "networks":
        return -1
    if parts[0] == "utilities" and len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


def _upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Every import from a module to a module of a higher layer."""
    found = {}
    for name, imported in graph.items():
        own = _layer(name)
        if own is None:
            continue
        up = sorted(m for m in imported if (_layer(m) if _layer(m) is not None else -1) > own)
        if up:
            found[name] = up
    return found


def test_no_import_from_a_higher_layer():
    graph, _ = _graph()
    assert _upward_imports(graph) == {}


def test_the_layer_rule_catches_an_upward_import():
    graph = {"utilities.method.losses": {"utilities.training.engine", "utilities.core.errors"},
             "utilities.training.engine": {"utilities.method.losses", "networks"},
             "networks.unet": {"utilities.core.errors"}}
    assert _upward_imports(graph) == {"utilities.method.losses": ["utilities.training.engine"],
                                      "networks.unet": ["utilities.core.errors"]}


def test_every_library_module_sits_in_a_layer():
    """Nothing at the top of ``utilities/`` but its face (``__init__``) and the paper's script;
    every subpackage is a layer and says what it holds."""
    top = sorted(p.name for p in (ROOT / "utilities").glob("*.py"))
    assert top == ["__init__.py", "scores.py"]
    packages = sorted(p.parent.name for p in (ROOT / "utilities").glob("*/__init__.py"))
    assert packages == sorted(LAYERS)
    for layer in LAYERS:
        assert ast.get_docstring(ast.parse((ROOT / "utilities" / layer / "__init__.py").read_text())), layer


def test_command_line_code_only_in_scripts():
    """No module of the library runs as a script, except the paper's ``utilities/scores.py``."""
    _, scripts = _graph()
    assert scripts == SCRIPTS_IN_LIBRARY


#: The most lines a Python file outside ``tests/`` may have: past it, split the file by concern.
MAX_LINES = 700


def _sources(folder: Path):
    """The ``.py`` files under ``folder``, outside hidden folders (``.venv``) and ``tests/``."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path == ROOT / "tests":
            continue
        if path.is_dir():
            yield from _sources(path)
        elif path.suffix == ".py":
            yield path


def test_no_file_outside_tests_over_700_lines():
    """A module holds one concern its name says: no Python file outside ``tests/`` is over
    :data:`MAX_LINES` lines."""
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in _sources(ROOT)}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"over {MAX_LINES} lines, split by concern: " + ", ".join(f"{k} ({n})" for k, n in over.items())
