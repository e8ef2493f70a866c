"""The package's imports point one way: a lower layer never imports a higher one, and there is no import circle.

The graph is read from the installed package's sources (ast), lazy imports inside functions and
`TYPE_CHECKING` imports included: an arrow back up is a circle in the design even where Python tolerates it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import bertonnx
import bertonnx.benchmarks
import bertonnx.export

# Low to high. A module may import its own layer and the ones below. The first prefix that matches names
# the layer: "bertonnx.io.cache" before "bertonnx.io".
LAYERS: list[tuple[str, ...]] = [
    ("bertonnx.errors", "bertonnx.paths", "bertonnx.options", "bertonnx.batching", "bertonnx.io"),
    ("bertonnx.tokenize", "bertonnx.spans", "bertonnx.bundle", "bertonnx.pooling"),
    ("bertonnx.fidelity",),
    ("bertonnx.backends",),
    ("bertonnx.results",),
    ("bertonnx.runner",),
    ("bertonnx.type_level", "bertonnx.long_text"),  # type_level's face and computation; its job sits higher
    ("bertonnx.embedder",),
    ("bertonnx.study",),
    ("bertonnx.jobs", "bertonnx.type_level.job", "bertonnx.type_level.distributed"),
    ("bertonnx.export",),
    ("bertonnx.defaults", "bertonnx.serve", "bertonnx.cli", "bertonnx.benchmarks"),
    ("bertonnx",),  # the package face: re-exports for users, imported by nothing inside
]
ROOTS = {
    "bertonnx": Path(bertonnx.__file__).parent,
    "bertonnx.export": Path(bertonnx.export.__file__).parent,
    "bertonnx.benchmarks": Path(bertonnx.benchmarks.__file__).parent,
}


def modules() -> dict[str, Path]:
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if package == "bertonnx" and parts and parts[0] in ("export", "benchmarks"):
                continue  # an editable install may lay them out under the root too
            found[".".join([package, *parts])] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every bertonnx module `name` imports, and the packages that importing it runs (their __init__)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                module = ".".join(parts[:end])
                if module in known and module != name and not name.startswith(module + "."):
                    yield module


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: set(imported(name, path, set(found))) for name, path in found.items()}


def layer_of(module: str) -> int:
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_sources() -> None:
    edges = graph()
    assert "bertonnx.embedder" in edges and "bertonnx.runner" in edges["bertonnx.embedder"]
    assert "bertonnx.backends" in edges["bertonnx.runner"]  # a package's face counts as imported


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_no_arrow_points_up() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_the_checks_catch_a_circle_and_an_arrow_up() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("bertonnx.options") < layer_of("bertonnx.embedder") < layer_of("bertonnx.cli.embed")
    assert layer_of("bertonnx.type_level.vectors") < layer_of("bertonnx.type_level.job")
