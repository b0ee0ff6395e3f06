"""The code's shape, checked: no import cycles between `serving/` packages, `pipelines/` free of Ray, FastAPI and
gRPC, the stages free of Ray, and no module over 400 lines outside tests/."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

SOURCE_ROOTS = ("serving", "pipelines", "tooling", "loadtests")


def _modules(root: str) -> list[Path]:
    """The project's own modules: not generated code, not a virtualenv (loadtests/.venv-triton, node_modules)."""
    return [
        p
        for p in (PROJECT_ROOT / root).rglob("*.py")
        if "generated" not in p.parts
        and not any(part.startswith(".") or part == "node_modules" for part in p.relative_to(PROJECT_ROOT).parts)
    ]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _serving_unit(module: str) -> str | None:
    """`serving.<package or module>` a module belongs to (the unit import cycles are checked between)."""
    parts = module.split(".")
    if parts[0] != "serving" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycles_between_serving_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _modules("serving"):
        unit = _serving_unit(".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts))
        for name in _imports(path):
            target = _serving_unit(name)
            if unit and target and target != unit:
                graph[unit].add(target)
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


@pytest.mark.parametrize(
    ("root", "forbidden"),
    [("pipelines", ("ray", "fastapi", "grpc", "serving")), ("serving/stages", ("ray", "fastapi", "grpc"))],
)
def test_pure_layers_import_no_framework(root: str, forbidden: tuple[str, ...]) -> None:
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}: {name}"
        for path in _modules(root)
        for name in _imports(path)
        if name.split(".")[0] in forbidden
    ]
    assert not offenders, offenders


def test_no_module_over_400_lines_outside_tests() -> None:
    long = [
        f"{path.relative_to(PROJECT_ROOT)} ({n})"
        for root in SOURCE_ROOTS
        for path in _modules(root)
        if (n := len(path.read_text().splitlines())) > 400
    ]
    assert not long, long
