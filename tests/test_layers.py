"""Dependencies point downward only, packages talk through their public names, and no
import cycle exists among canon's files."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import canon

PACKAGE = Path(canon.__file__).parent
OUTER = ("sqlalchemy", "alembic", "huggingface_hub", "click", "safetensors", "tqdm", "matplotlib")

# Modules every layer may use: errors, input bounds, lazy exports, device names, content
# pins of dataset files.
BASE = {"errors", "_limits", "_lazy", "_format", "_pins", "device"}
# What each part of canon may import besides itself and BASE (DESIGN §2: cli -> hub ->
# zoo -> engine -> core, with plots, the reproduction and the service beside the CLI).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": set(),
    "architectures": {"core"},
    "checkpoint": {"core"},
    "demo": {"architectures", "core"},
    "engine": {"architectures", "core", "data"},
    "zoo": {"architectures", "checkpoint", "core", "data", "engine"},
    "hub": {"architectures", "checkpoint", "core", "zoo"},
    "plots": {"engine", "zoo"},
    "repro": {"architectures", "core", "data", "engine", "plots", "zoo"},
    "service": {"_options", "architectures", "checkpoint", "engine", "plots", "zoo"},
    "cli": {
        "_options",
        "architectures",
        "core",
        "data",
        "demo",
        "engine",
        "hub",
        "plots",
        "repro",
        "service",
        "zoo",
    },
    "_options": set(),
}


def imports_of(path: Path, *, typing: bool = True) -> set[str]:
    """The absolute module names ``path`` imports (with ``typing``, also those imported
    only for type checking)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                not typing
                and isinstance(child, ast.If)
                and "TYPE_CHECKING" in ast.unparse(child.test)
            ):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.add(child.module)
                names.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


def canon_files() -> Iterator[tuple[str, Path]]:
    """Every module of canon with its part (a subpackage, or a top-level module)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).parts
        if rel[0] in ("__init__.py", "__main__.py"):
            continue
        yield rel[0].removesuffix(".py"), path


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_downward(part: str) -> None:
    """A part imports itself, the base modules and the parts below it; the core no outer
    library at all."""
    allowed = ALLOWED[part] | BASE | {part}
    files = [path for p, path in canon_files() if p == part]
    assert files
    for path in files:
        for name in imports_of(path):
            top = name.split(".")[0]
            if part == "core":
                assert top not in OUTER, f"{path.name} imports {name}"
            if top == "canon" and "." in name:
                assert name.split(".")[1] in allowed, f"{path} imports {name}"


def test_every_part_has_rules() -> None:
    """No part of canon escapes the layering rules."""
    assert {part for part, _ in canon_files()} <= set(ALLOWED) | BASE


def test_no_private_imports_across_parts() -> None:
    """Outside a package, nothing imports its private modules (`canon.X._y`): each package
    exports what others need."""
    for part, path in canon_files():
        for name in imports_of(path):
            pieces = name.split(".")
            if len(pieces) >= 3 and pieces[0] == "canon" and pieces[2].startswith("_"):
                assert pieces[1] == part, f"{path} imports {name}"


def test_no_import_cycles() -> None:
    """The graph of run-time imports among canon's modules has no cycle."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["canon", *path.relative_to(PACKAGE).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {
        name: {m for m in imports_of(path, typing=False) if m in modules and m != name}
        for name, path in modules.items()
    }
    done: set[str] = set()

    def walk(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = [*trail[trail.index(node) :], node]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if node in done:
            return
        for nxt in sorted(graph[node]):
            walk(nxt, [*trail, node])
        done.add(node)

    for name in sorted(graph):
        walk(name, [])


def test_every_public_name_resolves():
    """Each name in canon.__all__ and canon.zoo.__all__ loads (the lazy export table is right)."""
    import canon.zoo

    for package in (canon, canon.zoo):
        for name in package.__all__:
            assert getattr(package, name) is not None, name
        assert set(package.__all__) <= set(dir(package))


def test_command_line_import_loads_no_torch():
    """Importing the command line (as every `canon` call does) imports neither torch nor scipy."""
    import subprocess
    import sys

    code = "import sys, canon.cli; print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
