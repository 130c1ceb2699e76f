"""The package's layers (docs/design.md, "Layers"): imports go down, and files import no cycle.

Counting rule. Every ``import``/``from … import`` of a ``lipaudit`` module is an edge from its file
to the file it names, at module level and inside functions alike; imports under
``if TYPE_CHECKING:`` are left out (they never run). ``from package import name`` points at
``package/name.py`` when that is a module, else at ``package/__init__.py``. A *cycle* is a group
of two or more files that reach one another (a strongly connected component). An import is
*upward* when its file's layer is below the layer of the file it names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lipaudit"

# Layer of each top-level module or package, from the bottom. An import may stay in its layer or go down.
LAYERS: list[set[str]] = [
    {"errors", "invariants", "report_types", "shapes", "version"},
    {"ir", "intervals", "spectral", "linear_maps", "sdp"},
    {"ops"},
    {"passes"},
    {"load"},
    {"execute", "domain", "compose", "tight"},
    {"options", "report"},
    {"parallel"},
    {"pipeline"},
    {"config", "api", "model_jobs"},
    {"diff", "render", "testing"},
    {"cli", "__main__", "__init__"},
]
LAYER = {name: rank for rank, names in enumerate(LAYERS) for name in names}

MAX_CYCLES = 1
MAX_UPWARD = 5


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node.test):
            yield from (imp for child in node.orelse for imp in _imports_of(child))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """File → the files it imports (as module names)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level else []
                origin = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{origin}.{alias.name}" for alias in node.names]
                targets = [target if target in modules else origin for target in targets]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("lipaudit") and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of two or more files (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )


def test_every_module_has_a_layer() -> None:
    unplaced = {name.split(".")[1] for name in files() if "." in name and name.split(".")[1] not in LAYER}
    assert not unplaced, f"give these a layer in LAYERS and docs/design.md: {sorted(unplaced)}"


def test_at_most_one_import_cycle() -> None:
    found = cycles(edges(files()))
    assert len(found) <= MAX_CYCLES, "\n".join(" ↔ ".join(cycle) for cycle in found)


def test_at_most_five_imports_run_up_the_layers() -> None:
    found = upward(edges(files()))
    assert len(found) <= MAX_UPWARD, "\n".join(found)


if __name__ == "__main__":  # the figures for a review: python tests/test_layers.py
    graph = edges(files())
    for cycle in cycles(graph):
        print("cycle:", " ↔ ".join(cycle))
    for line in upward(graph):
        print("upward:", line)
