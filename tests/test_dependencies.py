"""Every third-party module the package or its tests import is a declared dependency.

An undeclared one works on the developer's machine (something else pulled it in) and breaks for
a user whose environment differs.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _imported(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"napari_loopseg", "conftest", "__future__"}


def _undeclared(folder: Path, declared: set[str]) -> list[str]:
    provided_by = packages_distributions()
    missing = []
    for module in sorted(_imported(folder)):
        distributions = {d.lower().replace("_", "-") for d in provided_by.get(module, [module])}
        if not distributions & declared:
            missing.append(f"{module} ({', '.join(sorted(distributions))})")
    return missing


def test_package_imports_are_declared():
    # napari and its Qt stack come with napari itself, which a plugin must not pin; distributed is
    # the [cluster] extra, imported only for --workers / --scheduler
    declared = _declared() | {
        "napari",
        "npe2",
        "magicgui",
        "distributed",
        "pyqt6",
        "pyqt5",
        "pyside2",
        "pyside6",
    }
    declared |= {"monai"}  # optional: `loopseg bench` compares with MONAI when it is installed
    assert _undeclared(ROOT / "src", declared) == []


def test_test_imports_are_declared():
    declared = _declared("testing") | {"pytest-qt"}
    assert _undeclared(ROOT / "tests", declared) == []
