"""Dependencies point downward only: the core imports no file, storage, hub or CLI code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import canon

PACKAGE = Path(canon.__file__).parent
OUTER = ("sqlalchemy", "alembic", "huggingface_hub", "click", "safetensors", "tqdm", "matplotlib")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("layer", "allowed_canon"),
    [
        ("core", ("canon.core", "canon.errors")),
        ("architectures", ("canon.architectures", "canon.core", "canon.errors", "canon._limits")),
        (
            "engine",
            (
                "canon.engine",
                "canon.architectures",
                "canon.core",
                "canon.data",
                "canon.device",
                "canon.errors",
                "canon._limits",
            ),
        ),
    ],
)
def test_layer_imports_only_downward(layer, allowed_canon):
    """Modules of a layer import only their own layer, lower layers, errors and input bounds."""
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files
    for path in files:
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in OUTER, f"{path.name} imports {name}"
            if top == "canon":
                assert name.startswith(allowed_canon), f"{path.name} imports {name}"


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
