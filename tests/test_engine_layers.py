"""The engine's layers stay layers: its import graph has no cycle, no module takes another's private name,
and only the heavy optional libraries are imported inside functions (docs/engine.md "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "src" / "surerank" / "engine"
LAZY = {"onnxruntime", "onnx", "torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "ml_dtypes"}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in ENGINE.rglob("*.py"):
        parts = path.relative_to(ENGINE.parents[1]).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


MODULES = _modules()


def _imports(tree: ast.Module) -> list[tuple[ast.ImportFrom | ast.Import, bool]]:
    """Every import of the module, and whether it sits inside a function."""
    found: list[tuple[ast.ImportFrom | ast.Import, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import) or (isinstance(child, ast.ImportFrom) and child.module):
                found.append((child, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def _engine_edges(name: str) -> set[str]:
    edges = set()
    for node, _ in _imports(MODULES[name]):
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names if a.name in MODULES}
            continue
        for target in (node.module, *(f"{node.module}.{a.name}" for a in node.names)):
            if target in MODULES and target != name:
                edges.add(target)
    return edges


def test_the_engine_import_graph_has_no_cycle():
    graph = {name: _engine_edges(name) for name in MODULES}
    done: set[str] = set()

    def walk(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path[path.index(name):], name))}"
        if name in done:
            return
        for target in graph[name]:
            walk(target, (*path, name))
        done.add(name)

    for name in graph:
        walk(name, ())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_crosses_a_module_and_only_heavy_imports_are_lazy(name):
    for node, in_function in _imports(MODULES[name]):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [str(node.module)]
        if isinstance(node, ast.ImportFrom) and modules[0].startswith("surerank."):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{name} imports {modules[0]}.{', '.join(private)}"
        if in_function:
            assert all(m.split(".")[0] in LAZY for m in modules), f"{name}: {', '.join(modules)} imported in a function"
