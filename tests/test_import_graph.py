"""The import graph of ``envs/`` and ``agents/``: no cycle, one direction, ``envs`` stands alone.

Every module of both packages is parsed with ``ast`` (nothing is imported), and every import
it makes becomes an edge: at module level, inside a function, under ``TYPE_CHECKING``. An
import inside a function that only hides a cycle from the interpreter is still a cycle here.

An edge goes to the module an import names (``from agents.evaluate import metrics`` names the
module ``agents.evaluate.metrics``; ``from agents.evaluate import evaluate`` names the package
``agents.evaluate``) and, since importing a module runs its packages' ``__init__`` first, to
each package above it that is not also above the importer (those have run already).

``agents`` is layered, lowest first (:data:`LAYERS`): a module imports only from its own unit
or from a lower layer, so imports flow ``cli -> evaluate/export/training -> rollout ->
policies -> config (and action_map) -> outputs -> envs``, and the units of one layer never
import each other.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Scanned through ``fundgym/``, whose ``envs`` and ``agents`` are the top-level folders
#: (symlinked in a checkout, mapped by package-dir in a wheel).
PACKAGES = ("fundgym",)

#: Units of the import graph by layer, lowest first. A module belongs to the longest unit
#: that is it or a package above it; ``agents`` (the root package, ``__version__`` only)
#: holds no module but itself.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fundgym.envs",),
    ("fundgym",),
    ("fundgym.agents", "fundgym.agents.outputs"),
    ("fundgym.agents.config", "fundgym.agents.action_map"),
    ("fundgym.agents.policies",),
    ("fundgym.agents.rollout",),
    ("fundgym.agents.evaluate", "fundgym.agents.export", "fundgym.agents.training"),
    ("fundgym.agents.cli", "fundgym.__main__"),
)
ROOT_ONLY = frozenset({"fundgym", "fundgym.agents"})

#: What ``envs`` may import from outside itself, besides the standard library.
ENVS_DEPENDENCIES = frozenset({"numpy", "gymnasium", "yaml", "numba"})
#: Named separately so that a violation says what it is.
ENVS_FORBIDDEN = frozenset({"fundgym.agents", "torch", "stable_baselines3"})


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` at ``path:line``.

    Attributes:
        source: The importing module.
        target: A module of the scanned packages, or the top-level name of an outside one.
        path: The importing file, relative to the scanned root.
        line: The line of the import statement.
        internal: Whether ``target`` is one of the scanned packages' modules.
        implicit: A package run on the way to the named module (not named itself).
    """

    source: str
    target: str
    path: str
    line: int
    internal: bool
    implicit: bool = False

    def where(self) -> str:
        """``path:line`` of the import."""
        return f"{self.path}:{self.line}"


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root/<package>`` (``__init__``: the package)."""
    modules: dict[str, Path] = {}
    for package in packages:
        found = [
            Path(d) / f
            for d, _, files in os.walk(root / package, followlinks=True)
            if "__pycache__" not in d
            for f in files
            if f.endswith(".py")
        ]
        for path in sorted(found):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement starts from."""
    if node.level == 0:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _closest_module(name: str, modules: Mapping[str, Path]) -> str:
    """``name`` if it is a module, else the closest package above it that is."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str, path: Path, modules: Mapping[str, Path], root: Path) -> list[Edge]:
    """Every import ``module`` makes, anywhere in its file, as edges."""
    rel = str(path.relative_to(root))
    named: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            named.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            start = _resolve(module, path, node)
            for alias in node.names:
                sub = f"{start}.{alias.name}"
                named.append((sub if sub in modules else start, node.lineno))
    edges: list[Edge] = []
    for name, line in named:
        top = name.split(".")[0]
        if top not in {m.split(".")[0] for m in modules}:
            edges.append(Edge(module, top, rel, line, internal=False))
            continue
        target = _closest_module(name, modules)
        edges.append(Edge(module, target, rel, line, internal=True))
        parts = target.split(".")
        for k in range(1, len(parts)):
            parent = ".".join(parts[:k])
            if parent in modules and not (module == parent or module.startswith(parent + ".")):
                edges.append(Edge(module, parent, rel, line, internal=True, implicit=True))
    return edges


def import_graph(root: Path, packages: Iterable[str]) -> tuple[dict[str, Path], list[Edge]]:
    """The modules under ``root/<packages>`` and every import they make."""
    modules = find_modules(root, packages)
    edges = [e for m, p in modules.items() for e in imports_of(m, p, modules, root)]
    return modules, edges


def find_cycle(edges: Iterable[Edge]) -> list[Edge] | None:
    """One import cycle among the internal edges (as the edges that close it), or ``None``."""
    out: dict[str, list[Edge]] = {}
    for e in edges:
        if e.internal and e.source != e.target:
            out.setdefault(e.source, []).append(e)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for e in sorted(out.get(node, []), key=lambda e: (e.target, e.line)):
            if state.get(e.target) == 1:
                start = next(i for i, p in enumerate(path) if p.source == e.target)
                return [*path[start:], e] if path[start:] else [e]
            if e.target not in state:
                path.append(e)
                found = visit(e.target)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(out):
        if node not in state:
            path.clear()
            found = visit(node)
            if found:
                return found
    return None


def tangles(edges: Iterable[Edge]) -> list[list[str]]:
    """The groups of modules that all reach each other through imports (sorted; size > 1)."""
    out: dict[str, set[str]] = {}
    for e in edges:
        if e.internal and e.source != e.target:
            out.setdefault(e.source, set()).add(e.target)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in out.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reached = {m: reach(m) for m in out}
    groups = {
        tuple(sorted(m2 for m2 in reached[m] if m in reached.get(m2, set())))
        for m in out
        if m in reached[m]
    }
    return sorted(list(g) for g in groups)


def describe_cycle(cycle: list[Edge]) -> str:
    """``a -> b (file:line) -> ... -> a`` for a failure message."""
    steps = [cycle[0].source]
    for e in cycle:
        how = "runs package" if e.implicit else "imports"
        steps.append(f"  {how} {e.target}  ({e.where()})")
    return "\n".join(steps)


def unit_of(module: str) -> str | None:
    """The unit of :data:`LAYERS` a module belongs to (``None``: not placed)."""
    best: str | None = None
    for units in LAYERS:
        for unit in units:
            inside = module.startswith(unit + ".") and unit not in ROOT_ONLY
            if (module == unit or inside) and (best is None or len(unit) > len(best)):
                best = unit
    return best


def _in_envs(module: str) -> bool:
    return module == "fundgym.envs" or module.startswith("fundgym.envs.")


def layer_of(unit: str) -> int:
    """The index of a unit's layer in :data:`LAYERS`."""
    return next(i for i, units in enumerate(LAYERS) if unit in units)


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    return import_graph(ROOT, PACKAGES)


# ------------------------------------------------------------ the checker itself ----


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_a_cycle_hidden_inside_a_function(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import helper\n",
            "pkg/b.py": "def helper():\n    from pkg import a\n    return a\n",
        },
    )
    _, edges = import_graph(tmp_path, ["pkg"])
    cycle = find_cycle(edges)
    assert cycle is not None
    assert {(e.source, e.target) for e in cycle} == {("pkg.a", "pkg.b"), ("pkg.b", "pkg.a")}
    assert "pkg/b.py:2" in describe_cycle(cycle)
    assert tangles(edges) == [["pkg.a", "pkg.b"]]


def test_the_checker_sees_a_package_that_imports_its_own_init(tmp_path):
    # sub.x takes a name from its own package's __init__, which imports sub.x: a real cycle
    # (the name may not exist yet), through a relative import.
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from pkg.sub.x import thing\nOTHER = 1\n",
            "pkg/sub/x.py": "from . import OTHER\nthing = OTHER\n",
        },
    )
    _, edges = import_graph(tmp_path, ["pkg"])
    cycle = find_cycle(edges)
    assert cycle is not None
    assert {e.source for e in cycle} == {"pkg.sub", "pkg.sub.x"}


def test_the_checker_accepts_a_tree_without_cycles_and_runs_foreign_packages(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "from pkg.low.base import X\n",
            "pkg/low/base.py": "import numpy\nX = 1\n",
            "pkg/high.py": "from pkg.low.base import X\n",
        },
    )
    _, edges = import_graph(tmp_path, ["pkg"])
    assert find_cycle(edges) is None
    assert tangles(edges) == []
    pairs = {(e.source, e.target, e.implicit) for e in edges}
    # importing pkg.low.base from outside pkg.low runs pkg.low's __init__ first
    assert ("pkg.high", "pkg.low", True) in pairs
    assert ("pkg.low.base", "numpy", False) in pairs


def test_units_and_layers_place_modules_by_their_longest_package():
    assert unit_of("fundgym.agents.evaluate.metrics") == "fundgym.agents.evaluate"
    assert unit_of("fundgym.agents.policies") == "fundgym.agents.policies"
    assert unit_of("fundgym.agents") == "fundgym.agents"
    # a root package claims nothing below it
    assert unit_of("fundgym.agents.somewhere_new") is None
    assert unit_of("fundgym.envs.core.step") == "fundgym.envs"
    assert layer_of("fundgym.agents.cli") > layer_of("fundgym.agents.evaluate")
    assert layer_of("fundgym.agents.evaluate") > layer_of("fundgym.agents.rollout")
    assert layer_of("fundgym.agents") > layer_of("fundgym") > layer_of("fundgym.envs")


# ------------------------------------------------------------ this repository ----


def test_every_module_is_placed_in_a_layer(graph):
    modules, _ = graph
    assert "fundgym.agents.cli" in modules and "fundgym.envs.exchange_env" in modules
    unplaced = sorted(m for m in modules if unit_of(m) is None)
    assert not unplaced, f"modules in no layer of LAYERS (place them): {unplaced}"


def test_no_import_cycle(graph):
    _, edges = graph
    cycle = find_cycle(edges)
    if cycle is not None:
        groups = "\n".join(", ".join(g) for g in tangles(edges))
        pytest.fail(
            "import cycle (function-level imports included):\n"
            f"{describe_cycle(cycle)}\nmodules that all import each other:\n{groups}"
        )
    assert tangles(edges) == []


def test_agents_imports_flow_down_the_layers(graph):
    _, edges = graph
    bad = []
    for e in edges:
        if not (e.internal and e.source.startswith("fundgym.agents")):
            continue
        src, dst = unit_of(e.source), unit_of(e.target)
        if src is None or dst is None or src == dst:
            continue  # unplaced modules fail their own test
        if layer_of(dst) >= layer_of(src):
            bad.append(f"{e.source} -> {e.target} ({e.where()}): {src} may not import {dst}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_envs_never_imports_agents_torch_or_stable_baselines3(graph):
    _, edges = graph
    bad = [
        f"{e.source} imports {e.target} ({e.where()})"
        for e in edges
        if _in_envs(e.source)
        and any(e.target == f or e.target.startswith(f + ".") for f in ENVS_FORBIDDEN)
    ]
    assert not bad, "\n".join(bad)


def test_envs_imports_only_numpy_gymnasium_yaml_numba_and_the_standard_library(graph):
    _, edges = graph
    allowed = ENVS_DEPENDENCIES | set(sys.stdlib_module_names)
    bad = [
        f"{e.source} imports {e.target} ({e.where()})"
        for e in edges
        if _in_envs(e.source) and not e.internal and e.target not in allowed
    ]
    assert not bad, "envs reaches outside its dependencies:\n" + "\n".join(bad)
