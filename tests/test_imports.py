"""Imports inside the package run one way (STYLE: service -> queue -> partition -> records / store): no
module may import, even only for type checking, a module that imports it back, however indirectly.

Each module is parsed with `ast`, so imports under `if TYPE_CHECKING:` and inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import querator

PACKAGE = Path(querator.__file__).parent


def _module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports (a package's `__init__` when a name comes from it)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _module_names()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_engine_layers_import_downwards_only() -> None:
    """The layers named by the style guide, checked directly so a cycle-free but upward import fails too."""
    graph = _graph()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for target in graph[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    assert "querator.service" not in reaches("querator.queue")
    below_queue = reaches("querator.partition") | reaches("querator.engine") | reaches("querator.waiters")
    assert not below_queue & {"querator.service", "querator.queue", "querator.catalog"}
    store = reaches("querator.store.memory") | reaches("querator.store.rocksdb") | reaches("querator.records")
    assert not store & {"querator.partition", "querator.engine", "querator.kvstate", "querator.queue"}


def test_a_cycle_is_found() -> None:
    """The checker itself: a two-module loop and a longer one are reported, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_type_checking_and_function_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "queue.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from querator.service import Service\n"
        "def later():\n    from querator import records\n"
    )
    modules = {"querator.queue": module, "querator.service": module, "querator.records": module}
    assert _imports("querator.queue", module, modules) == {"querator.service", "querator.records"}
