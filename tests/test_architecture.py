"""The house's layout, checked from the source: no import cycles, no borrowed private names.

Usage: ``python -m pytest tests/test_architecture.py`` (reads the sources; imports nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "search_spaces", "trainables", "results")


def modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for each project import in
    ``path``, late (inside a function) ones included: they are cycles all the same."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:  # `from results import storage`: the module itself
                    out.append((submodule, None, node.lineno))
                elif node.module in known:
                    out.append((node.module, alias.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m, _, _ in imports(path, known) if m != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_project_has_no_import_cycle_between_its_modules() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_name() -> None:
    known = modules()
    offenders = [f"{path.relative_to(REPO)}:{line}: {name} from {module}"
                 for mod, path in known.items() for module, name, line in imports(path, known)
                 if name and name.startswith("_") and not name.startswith("__")]
    assert offenders == []


def test_trainables_never_import_study_and_results_never_import_study() -> None:
    """Layers: study drives results and trainables; results reads trainables' configs and
    metrics; trainables trains (its one Tune adapter reads the checkpoint name of storage)."""
    offenders = []
    for name, targets in graph().items():
        below = name.split(".")[0] in ("trainables", "results", "search_spaces")
        offenders += [f"{name} -> {t}" for t in targets if below and t.startswith("study")]
        if name.startswith("trainables") and name != "trainables.tune_adapter":
            offenders += [f"{name} -> {t}" for t in targets if t.startswith("results")]
    assert offenders == []
