"""Layers: medsci's import graph has no cycle, the core never imports a generator, generators never import each other.

The graph comes from the source (AST), so it sees every import: module level, inside functions and under
``TYPE_CHECKING``, absolute and relative; ``from package import name`` counts as importing the submodule
``package.name`` when ``name`` is one. Implicit imports of parent packages (``__init__``) are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = "medsci.tasks"


def _module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``root`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _owner(name: str, modules) -> str | None:
    """The longest module of ours that ``name`` (a module or an attribute of one) lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, package: str = "medsci") -> dict[str, set[str]]:
    """``{module: modules of package it imports}`` for every module of ``package`` found under ``root``."""
    modules = _module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package holding this module, up level - 1
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                # "from a import b" imports a, and the submodule a.b when b is one.
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names
                                      if f"{source}.{alias.name}" in modules]
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    edges.add(owner)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _generator(module: str) -> str | None:
    """``medsci.tasks.<generator>`` holding ``module``, or None for the core."""
    parts = module.split(".")
    return ".".join(parts[:3]) if module.startswith(TASKS + ".") and len(parts) >= 3 else None


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_scanner_finds_cycles_through_function_level_relative_and_submodule_imports(tmp_path):
    """A synthetic package whose only cycle runs a -> b (inside a function) -> sub.c (relative, ``from . import``)
    -> a (under TYPE_CHECKING, ``from pkg import a``); d is on no cycle."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    import pkg.b\n",
        "pkg/b.py": "from .sub import c\nfrom pkg.d import helper\n",
        "pkg/d.py": "import os\nhelper = 1\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub", "pkg.sub.c", "pkg.d"}, "pkg.d": set(),
                     "pkg.sub": set(), "pkg.sub.c": {"pkg", "pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    _write(tmp_path, {"pkg/sub/c.py": "from .. import d\n"})  # the cycle broken: none left
    assert find_cycle(import_graph(tmp_path, "pkg")) is None


def test_medsci_has_no_import_cycle():
    cycle = find_cycle(import_graph(ROOT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_core_never_imports_a_generator():
    """The core reaches generators through the registry only (``medsci.tasks`` itself is the registry's
    folder of built-in generators, not a generator)."""
    graph = import_graph(ROOT)
    assert len(graph) > 100 and any(_generator(m) for m in graph)  # the scan saw the whole tree
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() if not m.startswith(TASKS)
                 for t in targets if _generator(t))
    assert not bad, "core modules importing generators: " + "; ".join(bad)


def test_no_generator_imports_another():
    graph = import_graph(ROOT)
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                 if _generator(m) and _generator(t) and _generator(m) != _generator(t))
    assert not bad, "generators importing each other: " + "; ".join(bad)
