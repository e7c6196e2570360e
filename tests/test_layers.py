"""The layers hold: every import between the project's packages is one the table below allows.

Each package sees only the packages under it, through their public names, so that a package can
be read, tested and changed knowing only what it imports. Imports are read from the source (AST),
inside functions too: a lazy import is still a dependency, only a hidden one.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> the project packages it may import; listed once, from the bottom layer up.
ALLOWED: dict[str, set[str]] = {
    "contract": set(),  # shared constants, standard library only
    "ghn": set(),  # torch modules, checkpoints, graphs: torch and torchvision only
    "postproc": {"contract"},
    "trainable": {"contract", "ghn", "postproc"},
    "ghntrain": {"contract", "ghn", "postproc", "trainable"},
    "analysis": {"contract"},
    "sweeps": {"contract", "ghn", "ghntrain", "postproc", "trainable"},
}
PACKAGES = tuple(ALLOWED)
# An entry point is imported by nothing, so it may reach up without closing a cycle:
# `python -m ghn train|evaluate` hands those commands to ghntrain.
ENTRY_POINT_EDGES = {("ghn.__main__", "ghntrain")}
# What ghn may import besides the standard library and itself.
GHN_THIRD_PARTY = {"torch", "torchvision", "numpy", "filelock"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "ghntrain._cli"
    target: str  # what it names, e.g. "ghn" or "trainable._data" or "analysis.best.rank_key"

    @property
    def package(self) -> str:
        return self.module.split(".")[0]

    @property
    def top(self) -> str:
        return self.target.split(".")[0]


def _imports(path: Path) -> list[Import]:
    """Every import of the file at ``path`` in the repository."""
    parts = path.relative_to(REPO).with_suffix("").parts
    is_package = parts[-1] == "__init__"
    module = ".".join(parts[:-1] if is_package else parts)
    return _imports_of(path.read_text(), module, is_package)


def _imports_of(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import of ``source`` (the code of ``module``), relative ones resolved, and
    ``from a import b`` named ``a.b`` (b may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts[:len(parts) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            found += [Import(module, f"{base}.{alias.name}") for alias in node.names]
    return found


def _all_imports() -> list[Import]:
    return [imp for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
            for imp in _imports(path)]


IMPORTS = _all_imports()


def _between_packages() -> list[Import]:
    return [imp for imp in IMPORTS if imp.top in ALLOWED and imp.top != imp.package]


def _private(imp: Import) -> bool:
    return any(p.startswith("_") and not p.endswith("__") for p in imp.target.split(".")[1:])


def test_the_table_names_only_project_packages_and_has_no_cycle():
    assert all(deps <= set(PACKAGES) for deps in ALLOWED.values())
    assert _cycle({p: set(deps) for p, deps in ALLOWED.items()}) is None


def test_every_import_between_packages_is_in_the_table():
    outside = [f"{imp.module} imports {imp.target}" for imp in _between_packages()
               if imp.top not in ALLOWED[imp.package]
               and (imp.module, imp.top) not in ENTRY_POINT_EDGES]
    assert outside == []


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for imp in _between_packages():
        if (imp.module, imp.top) not in ENTRY_POINT_EDGES:
            graph[imp.package].add(imp.top)
    assert _cycle(graph) is None


def test_no_module_imports_a_main_module():
    assert [f"{imp.module} imports {imp.target}" for imp in IMPORTS
            if "__main__" in imp.target.split(".")] == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_another_packages_private_modules(package):
    assert [f"{imp.module} imports {imp.target}" for imp in _between_packages()
            if imp.package == package and _private(imp)] == []


@pytest.mark.parametrize("package, third_party", [("ghn", GHN_THIRD_PARTY), ("contract", set())])
def test_bottom_packages_import_only_the_standard_library_and_their_few(package, third_party):
    allowed = set(sys.stdlib_module_names) | third_party | {package}
    assert [f"{imp.module} imports {imp.target}" for imp in IMPORTS
            if imp.package == package and imp.top not in allowed
            and (imp.module, imp.top) not in ENTRY_POINT_EDGES] == []


def test_the_import_reader_sees_lazy_and_relative_imports():
    """The checks above are only as good as the reader."""
    source = ("from . import _sibling\nfrom ..up import thing\n"
              "def f():\n    import ghn.__main__\n")
    targets = {imp.target for imp in _imports_of(source, "trainable.sub.mod", False)}
    assert targets == {"trainable.sub._sibling", "trainable.up.thing", "ghn.__main__"}
    in_init = _imports_of("from ._x import y\n", "trainable.sub", True)
    assert [imp.target for imp in in_init] == ["trainable.sub._x.y"]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path of its nodes, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None
