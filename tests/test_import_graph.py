"""The house drawn from its imports: no circle anywhere, and the low floors import nothing above them.

The graph is read from the source (``ast``), not from ``sys.modules``: every ``import`` counts,
at module level and inside functions (a lazy import is still a dependency, and a circle closed
by one is still a circle). Imports under ``TYPE_CHECKING`` count for the floors (a low module
names nothing above it, not even in an annotation) but not for circles: they never run.
Importing ``a.b.c`` is an edge to ``a.b.c`` only, not to the packages around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import imagewright

PACKAGE_DIR = Path(imagewright.__file__).resolve().parent
#: What ``formats/`` and ``disk/`` may import besides themselves (DESIGN.md, rules of the house).
BOTTOM = frozenset({"imagewright.binary", "imagewright.units", "imagewright.errors"})
#: ``disk/`` bottom floor first (see its package docstring); a module imports only lower floors.
DISK_FLOORS: tuple[frozenset[str], ...] = tuple(
    frozenset(f"imagewright.disk.{name}" for name in floor)
    for floor in (
        ("guids",),
        ("mbr", "gpt"),
        ("filesystems",),
        ("table",),
        ("mbr_table", "gpt_table"),
        ("partitions",),
        ("bootcode", "efiboot"),
        ("survey",),
    )
)


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = ["imagewright", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of every node inside an ``if TYPE_CHECKING:`` block."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            inside.update(id(child) for statement in node.body for child in ast.walk(statement))
    return inside


def import_graph(*, type_checking: bool = True) -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports (with or without
    the imports made only for type checkers)."""
    modules = module_files()

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        skipped = set() if type_checking else _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            # An import of a module that does not exist (yet) is no edge: it cannot run.
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                if base not in modules:
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in modules else base)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph[step])))
    return None


def room(module: str, depth: int = 2) -> str:
    return ".".join(module.split(".")[:depth])


def test_the_graph_sees_imports_of_every_kind() -> None:
    graph = import_graph()
    assert "imagewright.disk.filesystems.fat" in graph["imagewright.disk.filesystems"]  # from pkg import mod
    assert "imagewright.disk.mbr" in graph["imagewright.disk.table"]  # under TYPE_CHECKING
    assert "imagewright.disk.mbr" not in import_graph(type_checking=False)["imagewright.disk.table"]
    assert "imagewright.inspection" in graph["imagewright"]  # inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_anywhere_in_the_package() -> None:
    cycle = find_cycle(import_graph(type_checking=False))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_formats_and_disk_import_nothing_above_them() -> None:
    for name, targets in import_graph().items():
        if room(name) not in ("imagewright.formats", "imagewright.disk"):
            continue
        above = sorted(t for t in targets if room(t) != room(name) and t not in BOTTOM)
        assert not above, f"{name} imports {', '.join(above)}"


def test_disk_modules_import_only_lower_floors() -> None:
    def floor(module: str) -> int:
        for level, members in enumerate(DISK_FLOORS):
            if room(module, 3) in members:
                return level
        raise AssertionError(f"{module} is on no floor of disk/; add it to DISK_FLOORS and the docstring")

    graph = import_graph()
    for name, targets in graph.items():
        if room(name) != "imagewright.disk" or name == "imagewright.disk":
            continue
        for target in targets:
            if room(target) != "imagewright.disk" or room(target, 3) == room(name, 3):
                continue  # the bottom modules, or inside one floor's package (filesystems/)
            assert floor(target) < floor(name), f"{name} imports {target}, which is not below it"
