"""Import boundaries, read from the source (AST), not from what happens to be imported at run time.

* `lpn_edge.runtime` imports nothing of torch, torchvision, onnx, nor of lpn_edge's export / train / model / eval,
  at any level (not even lazily inside a function); of the rest of lpn_edge only `ALLOWED_OUTSIDE_RUNTIME`.
* One documented exception (`WORKSTATION_DISPATCH`): `runtime.encoders.open_encoder` opens `.pt` / `.pt2` files
  (workstations) through a lazy import of `lpn_edge.torch_encoders`, inside `_open_workstation` only.
* `model`, `train`, `eval`, `data` and `runtime` import nothing of `lpn_edge.export`.
* No import cycle between the package's modules: no two import each other, directly or in a circle (lazy
  imports inside functions count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lpn_edge"
FORBIDDEN_IN_RUNTIME = ("torch", "torchvision", "onnx", "lpn_edge.export", "lpn_edge.train", "lpn_edge.model",
                        "lpn_edge.eval")
# The modules of lpn_edge outside the runtime that the runtime may import (none of them imports torch or onnx;
# lpn_edge.geo is torch-free for the runtime's sake: `localize` measures distances with georef).
ALLOWED_OUTSIDE_RUNTIME = ("lpn_edge", "lpn_edge.errors", "lpn_edge.fileio", "lpn_edge.geo.georef")
# (runtime module, the torch module it may import, the function that must hold that import): the one edge from the
# runtime to PyTorch, for the workstation backends of open_encoder. A drone opens .onnx / .engine and never runs it.
WORKSTATION_DISPATCH = ("lpn_edge.runtime.encoders", "lpn_edge.torch_encoders", "_open_workstation")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def imported_names(name: str, path: Path) -> set[str]:
    """Every module `name` imports, at any level, as dotted names (relative imports resolved; `from a import b`
    gives `a.b` when that is a module of the package, else `a`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return found


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_runtime_imports_nothing_of_torch_onnx_or_the_build_side():
    offences = [f"{name} imports {imported}" for name, path in MODULES.items() if _is_under(name, ("lpn_edge.runtime",))
                for imported in sorted(imported_names(name, path)) if _is_under(imported, FORBIDDEN_IN_RUNTIME)]
    assert offences == []
    assert len([n for n in MODULES if n.startswith("lpn_edge.runtime.")]) >= 7


def test_runtime_imports_only_allowed_modules_of_lpn_edge():
    runtime, dispatcher_allowed, _function = WORKSTATION_DISPATCH
    offences = [f"{name} imports {imported}" for name, path in MODULES.items() if _is_under(name, ("lpn_edge.runtime",))
                for imported in sorted(imported_names(name, path))
                if _is_under(imported, ("lpn_edge",)) and not _is_under(imported, ("lpn_edge.runtime",))
                and imported not in ALLOWED_OUTSIDE_RUNTIME
                and (name, imported) != (runtime, dispatcher_allowed)]
    assert offences == []


def test_the_workstation_dispatch_is_one_lazy_import_in_one_function():
    module, target, function = WORKSTATION_DISPATCH
    tree = ast.parse(MODULES[module].read_text())
    holders = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
               for inner in ast.walk(node) if isinstance(inner, ast.ImportFrom) and inner.module == target]
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 and target in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module])]
    assert holders == [function] and top_level == []
    assert "torch" in imported_names(target, MODULES[target])  # what the exception is for


@pytest.mark.parametrize("stage", ["model", "train", "eval", "data", "runtime"])
def test_stages_import_nothing_of_export(stage):
    offences = [f"{name} imports {imported}" for name, path in MODULES.items()
                if _is_under(name, (f"lpn_edge.{stage}",))
                for imported in sorted(imported_names(name, path)) if _is_under(imported, ("lpn_edge.export",))]
    assert offences == []


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_between_modules():
    graph = {name: {m for m in imported_names(name, path) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    assert import_cycles(graph) == []
    assert "lpn_edge.runtime.artifact" in graph["lpn_edge.export.pipeline"]  # export imports runtime


def test_cycle_finder_finds_a_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
