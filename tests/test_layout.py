"""The package's architecture, checked from its own source: the import graph has no circle, no import
runs back up the pipeline, every package-internal import is a plain module-level one, and no module
takes another module's private names.

The floors are the pipeline (README, "Layout"): a room may import rooms on lower floors only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lora_proofcheck"

#: room -> floor, bottom up; rooms on one floor do not import each other
FLOORS = {
    "errors": 0, "_lib": 1,
    "derivations": 2,
    "codegen": 3,
    "kernels": 4,
    "problem": 5,
    "certification": 6, "testing": 6,
    "gradients": 7,
    "checks": 8, "benchmarks": 8, "sweeps": 8,
    "report": 9,
    "audit": 10,
    "cli": 11,
    "__init__": 12, "__main__": 12,
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.startswith("_generated_"):
            continue  # generated: array_api_compat and `_ops` only (test_codegen checks them)
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _imports():
    """(importer, imported module, names, at module level?) for every package-internal import."""
    out = []
    for module, path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", node)
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                target, names = None, [a.name for a in node.names]
                for name in names:
                    if name.startswith("lora_proofcheck"):
                        out.append((module, name, [], id(node) in top))
                continue
            else:
                continue
            if not target.startswith("lora_proofcheck"):
                continue
            submodules = [n for n in names if _is_module(f"{target}.{n}")]
            for n in submodules:  # `from .. import testing` imports the module lora_proofcheck.testing
                out.append((module, f"{target}.{n}", [], id(node) in top))
            if len(submodules) < len(names):
                out.append((module, target, [n for n in names if n not in submodules], id(node) in top))
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def test_every_room_has_a_floor():
    rooms = {_room(m) for m, _ in _modules()}
    assert rooms <= set(FLOORS), sorted(rooms - set(FLOORS))


def test_no_import_runs_back_up_the_pipeline():
    bad = []
    for importer, target, _, _ in _imports():
        a, b = _room(importer), _room(target)
        if a != b and (FLOORS[b] >= FLOORS[a]):
            bad.append(f"{importer} -> {target} (floor {FLOORS[a]} -> {FLOORS[b]})")
    assert not bad, "\n".join(bad)


def find_circle(graph: dict) -> list | None:
    """A loop of the directed graph {node: set of nodes} (a package importing its own modules is not
    one), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (loop := visit(nxt)):
                return loop
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (loop := visit(node)):
            return loop
    return None


def test_the_import_graph_has_no_circle():
    graph = {}
    for importer, target, _, _ in _imports():
        if target != importer:
            graph.setdefault(importer, set()).add(target)
    assert find_circle(graph) is None, find_circle(graph)
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds one


def test_package_imports_are_plain_module_level_ones():
    """No stage is optional: a missing module is an ImportError at import time, never a skipped row."""
    late = [f"{i} -> {t}" for i, t, _, top in _imports() if not top]
    assert not late, late


def test_no_module_takes_another_modules_private_names():
    bad = [f"{i}: from {t} import {n}" for i, t, names, _ in _imports() for n in names
           if n.startswith("_") and not n.startswith("__") and not _is_module(f"{t}.{n}")]
    assert not bad, bad


@pytest.mark.parametrize("module", ["lora_proofcheck._lib.xp", "lora_proofcheck.problem"])
def test_the_checker_sees_imports(module):
    """The walk above finds imports at all (so the tests above can fail)."""
    assert any(i == module for i, *_ in _imports())
