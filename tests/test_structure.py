"""The import graph of the packages points one way: no module imports, directly or through
others, a module that imports it back. Function-local imports and imports under
``TYPE_CHECKING`` count too: a cycle hidden inside a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"predlog": ROOT / "sdk", "predlog.replay": ROOT / "replay", "predlog.analysis": ROOT / "analysis"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The predlog modules ``name`` imports, anywhere in its text."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from . import _x" and "from predlog import _x" import the submodule _x
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_function_local_and_type_checking_imports() -> None:
    edges = graph()
    # replay._store imports the maintenance rooms at the top, replay.__init__ the store
    assert "predlog.replay._store" in edges["predlog.replay"]
    assert "predlog.replay._compact" in edges["predlog.replay._store"]
    # predlog.replay._store imports predlog._sealing inside a method
    assert "predlog._sealing" in edges["predlog.replay._store"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    found = [c for c in cycles(graph()) if any(m == package or m.startswith(package + ".") for m in c)]
    assert found == [], f"import cycles in {package}: " + "; ".join(" <-> ".join(c) for c in found)


def test_dependencies_point_one_way_between_the_packages() -> None:
    edges = graph()
    for module, targets in edges.items():
        if not module.startswith(("predlog.replay", "predlog.analysis")):  # the SDK
            assert not [t for t in targets if t.startswith(("predlog.replay", "predlog.analysis"))], module
        if module.startswith("predlog.replay"):
            assert not [t for t in targets if t.startswith("predlog.analysis")], module
