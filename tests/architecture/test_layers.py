"""The layer rule of docs/ARCHITECTURE.md: a module imports only from its own layer or below.

Every ``import`` / ``from ... import`` of an ehrlens module anywhere in a file counts (also
inside functions: a lazy import is still a dependency), except those under
``if TYPE_CHECKING:``, which exist for annotations only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "ehrlens"

#: Top-level subpackage -> layer; lowest first.
LAYERS = {
    "core": 0,
    "data": 1,
    "models": 2,
    "interpret": 2,
    "metrics": 3,
    "integrations": 3,
    "explain": 4,
    "report": 4,
    "app": 5,
    "cli": 6,
}
#: Same-layer pairs that must not depend on each other either.
FORBIDDEN = {("models", "interpret"), ("interpret", "models")}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def ehrlens_imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every runtime import of an ehrlens module in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ehrlens")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("ehrlens"):
                if module == "ehrlens" or node.module is None:  # from . import x
                    found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
                else:
                    found.append((node.lineno, module))
    return found


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(package: Path = PACKAGE) -> list[str]:
    """Every import that breaks the layer rule, as ``file:line: a (layer) -> b (layer)``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        source = _top(_module_name(path, package))
        if source not in LAYERS:  # the package root re-exports; it is not a layer
            continue
        for line, module in ehrlens_imports(path, package):
            target = _top(module)
            if target is None or target == source:
                continue
            if target not in LAYERS:
                found.append(f"{path.name}:{line}: {source} imports the package root ({module})")
            elif LAYERS[target] > LAYERS[source] or (source, target) in FORBIDDEN:
                found.append(
                    f"{path.relative_to(package)}:{line}: {source} (layer {LAYERS[source]}) "
                    f"imports {module} (layer {LAYERS[target]})"
                )
    return found


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert subpackages == set(LAYERS), "give every subpackage a layer in LAYERS and the docs"
    assert not loose, f"modules at the package root belong in a layer: {sorted(loose)}"


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_the_leaf_layer_imports_nothing_of_ehrlens():
    imports = [
        (path.name, module)
        for path in (PACKAGE / "core").rglob("*.py")
        for _, module in ehrlens_imports(path)
        if not module.startswith("ehrlens.core")
    ]
    assert imports == []


@pytest.mark.parametrize(
    ("source", "line", "expected"),
    [
        ("models/x.py", "from ..interpret.api import GradientInterpretable", "models (layer 2)"),
        ("data/x.py", "from ..models import Transformer", "data (layer 1)"),
        ("core/x.py", "import ehrlens.data", "core (layer 0)"),
        ("explain/x.py", "from ..app.workflow import train_model", "explain (layer 4)"),
        ("metrics/x.py", "def f():\n    from ..report import write_report", "metrics (layer 3)"),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, source, line, expected):
    package = tmp_path / "ehrlens"
    for name in LAYERS:
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / source).write_text(line + "\n")
    found = violations(package)
    assert len(found) == 1 and expected in found[0]


def test_type_checking_imports_are_allowed(tmp_path):
    package = tmp_path / "ehrlens"
    for name in LAYERS:
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "interpret" / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..models import BaseModel\n"
    )
    assert violations(package) == []
