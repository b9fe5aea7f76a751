"""psmpi's modules import each other without a circle.

Every import counts, at module level or inside a function (a lazy import is a dependency
too), except those under ``if TYPE_CHECKING:`` (annotations only) and the re-exports of
``psmpi/__init__.py``, which sits above everything.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "psmpi"


def module_files() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(module: str, path: pathlib.Path, node: ast.Import | ast.ImportFrom,
             files: dict[str, pathlib.Path]) -> list[str]:
    """The modules ``node`` imports: a name in a from-import is a module or a name of its
    module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name if name in files else base for name in names]


def type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        skipped = type_checking_only(tree)
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                for name in imported(module, path, node, files):
                    while name not in files and "." in name:
                        name = name.rpartition(".")[0]
                    if name in files and name not in (module, "psmpi"):
                        deps.add(name)
        graph[module] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert len(graph) > 40 and "psmpi.store.table" in graph["psmpi.store.commit"] | {
        "psmpi.store.table"}  # the walk sees the package
    assert circles(graph) == []


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    graph = import_graph()
    graph["psmpi.layout"] = graph["psmpi.layout"] | {"psmpi.driver.run"}  # run reaches layout
    assert circles(graph)


# The layers of psmpi/__init__.py's docstring, bottom first: a module may import only from
# its own layer and the layers below it.
LAYERS = [
    {"errors", "layout", "values", "utils", "stopping", "params", "config", "results",
     "missing", "lazy"},
    {"store"}, {"worker"}, {"backends"}, {"watch"}, {"study"}, {"history"}, {"tools"},
    {"driver"}, {"api", "executor"}, {"cli", "__main__"},
]


def layer_of(module: str) -> int:
    """The layer of a module, by its folder (or its own name at the top level)."""
    part = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if part in names)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((module, dep) for module, deps in graph.items() if module != "psmpi"
                  for dep in deps if layer_of(dep) > layer_of(module))


def test_every_module_imports_only_its_layer_and_the_layers_below():
    graph = import_graph()
    assert all(layer_of(m) >= 0 for m in graph if m != "psmpi")  # every module has a layer
    assert upward_imports(graph) == []


def test_an_upward_import_is_found():
    graph = import_graph()
    graph["psmpi.store.lock"] = graph["psmpi.store.lock"] | {"psmpi.watch.progress"}
    assert upward_imports(graph) == [("psmpi.store.lock", "psmpi.watch.progress")]


def test_the_distribution_ships_every_package_folder():
    """pyproject.toml's package list (an explicit one once left out new folders)."""
    import setuptools

    text = (PACKAGE.parent / "pyproject.toml").read_text()
    assert '[tool.setuptools.packages.find]\ninclude = ["psmpi", "psmpi.*"]' in text
    shipped = set(setuptools.find_packages(str(PACKAGE.parent), include=["psmpi", "psmpi.*"]))
    folders = {".".join(p.parent.relative_to(PACKAGE.parent).parts)
               for p in PACKAGE.rglob("__init__.py")}
    assert folders <= shipped and {"psmpi.driver", "psmpi.worker"} <= folders
