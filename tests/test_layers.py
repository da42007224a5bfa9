"""The import graph points down: model <- serving <- components <- pipelines, with no cycles.

Every ``import`` in the packages counts, also the ones inside functions (a lazy import is still a
dependency); only ``if TYPE_CHECKING:`` blocks (annotations, never executed) are left out. ``bench/`` and
``tests/`` sit above everything and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"model": 0, "serving": 1, "components": 2, "pipelines": 3}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # drop `if TYPE_CHECKING:` bodies
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return {n for n in found if n.split(".")[0] in LAYERS}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for mod, path in mods.items():
        targets = set()
        for name in _imports(path, mod):
            while name and name not in mods:  # "pkg.mod.attr" -> the module that defines it
                name = name.rpartition(".")[0]
            if name and name != mod:
                targets.add(name)
        graph[mod] = targets
    return graph


def test_no_upward_imports():
    bad = sorted(f"{m} -> {t}" for m, ts in _graph().items() for t in ts
                 if LAYERS[t.split(".")[0]] > LAYERS[m.split(".")[0]])
    assert not bad, "imports that point up the layers (model <- serving <- components <- pipelines):\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules (and them importing siblings) is not a cycle of concern
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not comps, f"import cycles: {comps}"
