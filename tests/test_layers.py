"""The layers in order: the base package imports no service, and no service imports the local stack.

rtdash/ (settings, contracts, shared helpers) <- producers/, jobs/, push_server/ (the services)
<- stack/ (the `rtdash` command that runs them). Read from the source with `ast`, so an
import inside a function counts as much as one at the top of a module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rtdash.settings import PROJECT_ROOT

SERVICES = ("producers", "jobs", "push_server")
FORBIDDEN = {
    "rtdash": {*SERVICES, "stack", "bench", "tests"},
    **{package: {"stack", "bench", "tests"} for package in SERVICES},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports (relative imports stay within its own package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_imported_packages_reads_every_kind_of_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os.path, jobs.spark as s\nfrom stack.runner import Stack\nfrom .sibling import x\n"
                      "def f():\n    from producers import shop\n")
    assert imported_packages(module) == {"os", "jobs", "stack", "producers"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_from_the_layers_above_it(package):
    modules = sorted((PROJECT_ROOT / package).rglob("*.py"))
    assert modules, f"no modules under {package}/"
    wrong = {str(path.relative_to(PROJECT_ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
             for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}
