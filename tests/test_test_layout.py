"""Helpers shared by tests live in support modules: no test module (scenarios/test_*.py,
tests/test_*.py) imports from another test module, and the scenario runner's kit imports no
scenario. Checked on the source with `ast`, so a new import of the kind fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    return modules_named(path.read_text(), ".".join(path.relative_to(ROOT).parent.parts))


def modules_named(source: str, package: str) -> set[str]:
    """Every module an import statement in `source` names (relative imports resolved
    against `package`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # from x import test_y
    return found


def is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


def test_no_test_module_imports_another():
    files = sorted(ROOT.glob("scenarios/test_*.py")) + sorted(ROOT.glob("tests/test_*.py"))
    assert len(files) > 50
    offenders = {str(f.relative_to(ROOT)): sorted(filter(is_test_module, imported_modules(f)))
                 for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


def test_the_kit_imports_no_scenario():
    files = sorted(ROOT.glob("scenarios/kit/**/*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(
        n for n in imported_modules(f) if is_test_module(n) or n.endswith("conftest"))
        for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


def test_the_rule_sees_an_import():
    """The check itself can fail: every import form of a test module is seen."""
    source = ("from tests.test_conf import load\nfrom scenarios import test_imap_smoke\n"
              "import tests.test_cli\nfrom .test_pop3_login import OK\n")
    names = {n for n in modules_named(source, "scenarios") if is_test_module(n)}
    assert names == {"tests.test_conf", "scenarios.test_imap_smoke", "tests.test_cli",
                     "scenarios.test_pop3_login"}
