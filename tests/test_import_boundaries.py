"""The package's import structure: who may import whom, and no cycles.

The architecture (``chipsim.engine``'s and ``chipsim.trace``'s docstrings) holds only if the imports say
so. This test reads every module of ``chipsim`` with ``ast`` (nothing is imported or executed) and checks:

* the chip model (``chipsim/chip/``) imports only the trace contract (``chipsim.trace``), the config
  (``chipsim.config``), ``chipsim.errors`` and its own modules: it costs a trace and knows nothing of the
  engine, the rules or the experiments;
* the engine (``chipsim/engine/``) never imports the chip model, the experiments, the report or the
  entry points above them (``runner``, ``api``, ``cli``, ``plots``): it runs the training and records it
  in the trace, which is the one way its results reach the chip;
* no import cycle among ``chipsim``'s modules.

How imports inside a function are treated: a function-level import runs when the function is called,
so it cannot make ``import`` fail with a partly initialised module. The boundary rules apply to every
import, module or function level (a deferred upward import is still an upward dependency). The cycle
check over the whole package counts module-level imports; inside the engine, the chip model and the
trace contract it counts function-level imports too (a deferred import there only hides a cycle of
design, as ``inference`` <-> ``vit_inference`` did). ``if TYPE_CHECKING:`` blocks count as module level.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "chipsim"
CHIP_MAY_IMPORT = ("chipsim.trace", "chipsim.config", "chipsim.errors", "chipsim.chip")
ENGINE_MUST_NOT_IMPORT = ("chipsim.chip", "chipsim.experiments", "chipsim.report", "chipsim.plots",
                          "chipsim.runner", "chipsim.api", "chipsim.cli")
CORE = ("chipsim.engine", "chipsim.chip", "chipsim.trace")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    """Module name -> (path, is_package) for every module of the package."""
    return {_module_name(p): (p, p.name == "__init__.py") for p in sorted(PKG.glob("**/*.py"))}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imports() -> list:
    """(importer, imported chipsim module, module_level, line) for every import of a chipsim module."""
    mods = _modules()
    out = []
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node

        def module_level(node) -> bool:
            while node in parents:
                node = parents[node]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    return False
            return True

        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                if t.split(".")[0] != "chipsim":
                    continue
                while t not in mods and "." in t:          # ``import chipsim.x.y`` of a name inside a module
                    t = t.rsplit(".", 1)[0]
                if t != name:
                    out.append((name, t, module_level(node), node.lineno))
    return out


def _cycles(edges) -> list:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_imports_it_checks():
    """The analysis itself: it finds a known module-level import and a known function-level one (so an
    empty result below means no violation, not a walk that saw nothing)."""
    found = {(a, b, top) for a, b, top, _ in imports()}
    assert ("chipsim.chip.pool", "chipsim.trace", True) in found             # from ..trace import CATEGORIES
    assert ("chipsim.engine.training.trainer", "chipsim.engine.networks.network", True) in found
    assert any(a.startswith("chipsim.engine") and not top for a, _, top in found)


def test_chip_imports_only_the_trace_contract_config_and_errors():
    bad = [f"{a} imports {b} (line {line})" for a, b, _, line in imports()
           if _within(a, ("chipsim.chip",)) and not _within(b, CHIP_MAY_IMPORT)]
    assert not bad, "\n".join(bad)


def test_engine_does_not_import_the_chip_experiments_or_report():
    bad = [f"{a} imports {b} (line {line})" for a, b, _, line in imports()
           if _within(a, ("chipsim.engine",)) and _within(b, ENGINE_MUST_NOT_IMPORT)]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_among_module_level_imports():
    cycles = _cycles((a, b) for a, b, top, _ in imports() if top)
    assert not cycles, cycles


def test_no_import_cycle_in_engine_chip_and_trace_even_through_deferred_imports():
    cycles = _cycles((a, b) for a, b, _, _ in imports() if _within(a, CORE) and _within(b, CORE))
    assert not cycles, cycles
