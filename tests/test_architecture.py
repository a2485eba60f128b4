"""The house rules, read from the source with `ast` (nothing is imported):

- layering: `recsys` never imports `components`, `pipelines` or `serving`; only its command line (`recsys.cli`),
  the top of the house, may;
- no Python file in src/, serving/, pipelines/ or components/ is over MAX_LINES lines;
- no import cycle between our modules. Imports inside functions and under `if TYPE_CHECKING:` count too: a cycle
  hidden in a function still ties the modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {
    "recsys": ROOT / "src" / "recsys",
    **{name: ROOT / name for name in ("serving", "pipelines", "components")},
}
UPPER_LAYERS = ("components", "pipelines", "serving")
MAY_IMPORT_UPPER_LAYERS = "recsys.cli"
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of ours (a package is its __init__.py)."""
    modules = {}
    for package, folder in SOURCE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything `module` imports, wherever in the file the import statement is."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = ".".join(package[: len(package) - drop])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import module` imports pkg.module, `from pkg import name` pkg
                submodule = f"{source}.{alias.name}"
                yield (submodule if submodule in MODULES else source), node.lineno


def our_module(name: str) -> str | None:
    """The module of ours that importing `name` loads (the longest dotted prefix that is one), else None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, path in MODULES.items():
        for name, _ in imported_names(module, path):
            target = our_module(name)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that reach each other (size > 1 = a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def a_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One concrete cycle through the group's first module, for the failure message (breadth-first: shortest)."""
    members, start = set(group), group[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return group


def test_the_graph_sees_our_modules_and_their_imports() -> None:
    """The rules below are only as good as the graph: it must hold the packages and known edges."""
    graph = import_graph()
    assert {"recsys.schema", "recsys.cli", "serving.model", "pipelines.runner", "components.staging"} <= set(graph)
    assert "recsys.schema" in graph["recsys.cli.tables"]  # `from recsys import schema`
    assert "recsys" not in graph["recsys.cli.tables"]  # ... loads recsys.schema, not (only) the package
    assert "serving.server" in graph["recsys.cli.serve"]  # an import inside a function
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"], ["c"]]


def test_recsys_below_its_cli_never_imports_the_upper_layers() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for module, path in MODULES.items()
        if module.startswith("recsys")
        and module != MAY_IMPORT_UPPER_LAYERS
        and not module.startswith(MAY_IMPORT_UPPER_LAYERS + ".")
        for name, line in imported_names(module, path)
        if name.split(".")[0] in UPPER_LAYERS
    ]
    assert not offenders, "recsys (but recsys.cli) must not import components/pipelines/serving:\n" + "\n".join(
        offenders
    )


def test_no_source_file_is_over_the_line_limit() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in MODULES.values()}
    too_long = [
        f"{path.relative_to(ROOT)}: {lines} lines" for path, lines in sorted(sizes.items()) if lines > MAX_LINES
    ]
    assert not too_long, f"files over {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = [group for group in strongly_connected(graph) if len(group) > 1]
    assert not cycles, "import cycles (one example each):\n" + "\n".join(
        " -> ".join(a_cycle(graph, group)) for group in cycles
    )
