"""The package's imports run one way (docs/design.md, "Where things live"): no import circle
between modules, no module imports one from a higher floor, and nothing of the product imports
sedjax/benchmarks/ but the commands that run them. Read from the source (every import
statement, function-level ones included), nothing imported."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# floor of each folder of sedjax/; a module at sedjax/'s top (run.py, the commands) is above all
FLOORS = {"system": 0, "data": 1, "models": 1, "metrics": 1, "interop": 1, "train": 2,
          "reporting": 2, "recipes": 3, "config": 4, "benchmarks": 5}
TOP = 5
# the only modules outside sedjax/benchmarks/ that may import it: the commands running them
BENCHMARK_COMMANDS = {"sedjax.bench", "sedjax.device_check"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in (ROOT / "sedjax").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports() -> dict[str, set[str]]:
    """module -> the sedjax modules it imports (the package `sedjax` itself left out)."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        edges[name] = {m for m in found if m in modules and m not in ("sedjax", name)}
    return edges


def floor(module: str) -> int:
    """The floor of a sedjax module: its folder's, or TOP for sedjax/'s own modules."""
    parts = module.split(".")
    return FLOORS[parts[1]] if len(parts) > 1 and parts[1] in FLOORS else TOP


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert not circles(imports())


def test_no_import_from_a_higher_floor():
    upward = sorted(f"{a} -> {b}" for a, targets in imports().items() for b in targets
                    if floor(b) > floor(a))
    assert not upward, "\n".join(upward)


def benchmark_importers(edges: dict[str, set[str]]) -> list[str]:
    """'a -> b' for each module a outside sedjax/benchmarks/ (and not a benchmark command) that
    imports a module b of it."""
    def inside(m: str) -> bool:
        return m == "sedjax.benchmarks" or m.startswith("sedjax.benchmarks.")
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if inside(b) and not inside(a) and a not in BENCHMARK_COMMANDS)


def test_only_the_benchmark_commands_import_benchmarks():
    outside = benchmark_importers(imports())
    assert not outside, "\n".join(outside)


def test_the_checks_see_what_they_forbid():
    edges = {"sedjax.metrics.a": {"sedjax.metrics.b"}, "sedjax.metrics.b": {"sedjax.metrics.a"},
             "sedjax.data.c": {"sedjax.recipes.d"}, "sedjax.recipes.d": set()}
    assert circles(edges) == [["sedjax.metrics.a", "sedjax.metrics.b"]]
    assert floor("sedjax.recipes.d") > floor("sedjax.data.c") and floor("sedjax.run") == TOP
    edges = {"sedjax.run": {"sedjax.benchmarks.timing"}, "sedjax.bench": {"sedjax.benchmarks"},
             "sedjax.benchmarks.timing": {"sedjax.system.files"}}
    assert benchmark_importers(edges) == ["sedjax.run -> sedjax.benchmarks.timing"]
    assert "sedjax.benchmarks.speed_report" in imports()["sedjax.bench"]  # the rule sees it
