"""The package's layer rule, checked on the source: each layer imports only from the layers below
it (or its own), and no two modules import each other, directly or around a circle.

Every ``import``/``from ... import`` under ``src/chainrule`` counts, at module level and inside
functions alike: a function-level import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "src" / "chainrule"

#: Layers from low to high; folders on one row share a rank and must not import each other.
LAYER_ORDER = [
    ("util",),
    ("engine",),
    ("numpy",),
    ("transforms",),
    ("backend",),
    ("nn", "optim", "data"),
    ("estimators",),
    ("training",),
    ("distributed",),
    ("apps",),
]
RANK = {layer: rank for rank, layers in enumerate(LAYER_ORDER) for layer in layers}
#: On top of everything: the package root and ``python -m chainrule``.
EXEMPT = {"chainrule", "chainrule.__main__"}


def _modules():
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = ("chainrule", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (path, is_package)
    return modules


MODULES = _modules()


def _imports(name, path, is_package):
    """(line, imported module) for every chainrule module that ``name`` imports."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else target))
    return [(line, target) for line, target in found if target in MODULES]


GRAPH = {name: _imports(name, *info) for name, info in MODULES.items()}


def _layer(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_upward_import():
    violations = []
    for name, imports in GRAPH.items():
        if name in EXEMPT:
            continue
        for line, target in imports:
            if target in EXEMPT:
                violations.append(f"{name}:{line} imports the package root {target}")
                continue
            own, other = _layer(name), _layer(target)
            if own != other and RANK[other] >= RANK[own]:
                violations.append(f"{name}:{line} imports {target} ({other} is not below {own})")
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def _cycles():
    """Strongly connected components of more than one module (Tarjan's, iterative)."""
    edges = {
        name: sorted({t for _, t in imports if t not in EXEMPT})
        for name, imports in GRAPH.items()
        if name not in EXEMPT
    }
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], 0
    for start in edges:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            for next_position in range(position, len(edges[node])):
                child = edges[node][next_position]
                if child not in index:
                    work.append((node, next_position + 1))
                    work.append((child, 0))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return components


#: Import circles the package still has (none): a new one fails the test.
KNOWN_CYCLES: set = set()


def test_no_import_cycle():
    cycles = {tuple(sorted(cycle)) for cycle in _cycles()}
    assert cycles == KNOWN_CYCLES, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_import_chainrule_loads_only_the_inner_layers():
    code = (
        "import sys, chainrule; "
        "print(' '.join(m for m in sys.modules if m.startswith('chainrule')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    outer = [m for m in loaded if _layer(m) not in (None, "engine", "transforms", "numpy")]
    assert not outer, f"import chainrule loaded outer modules: {outer}"
    assert len(loaded) <= 25
