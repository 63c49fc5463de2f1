"""Installed under one name: `pip install .` adds only `postern` to site-packages, every
package folder of the checkout is in it, the code names the project's modules only as
postern.*, and the product (proxy/) imports nothing of the toolkit."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("proxy", "fakes", "checkauth", "scenarios", "loadtest", "reports")
TOOLKIT = ("fakes", "checkauth", "scenarios", "loadtest", "reports")


def tracked_python() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [ROOT / line for line in out.split() if (ROOT / line).exists()]


def imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_every_package_folder_is_installed():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"] == {f"postern.{name}": name for name in FOLDERS}
    folders = sorted(str(p.parent.relative_to(ROOT)) for name in (*FOLDERS, "postern")
                     for p in (ROOT / name).rglob("__init__.py"))
    wanted = sorted(f in ("postern",) and "postern" or "postern." + f.replace("/", ".")
                    for f in folders)
    assert sorted(setup["packages"]) == wanted


def test_the_code_names_its_modules_under_postern():
    bare = [(str(path.relative_to(ROOT)), name) for path in tracked_python()
            for name in imported(path) if name.split(".")[0] in FOLDERS]
    assert bare == [], "import them as postern.<folder>..."


def test_the_product_imports_nothing_of_the_toolkit():
    arrows = [(str(path.relative_to(ROOT)), name)
              for path in (ROOT / "proxy").rglob("*.py") for name in imported(path)
              if name.startswith("postern.") and name.split(".")[1] in TOOLKIT]
    assert arrows == []


def test_pip_install_adds_only_postern(tmp_path):
    # from a copy: pip builds in the source tree, and the checkout must stay as it is
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "results", "lab", "*.egg-info", "__pycache__", ".hypothesis"))
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), str(source)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert top == ["postern", next(n for n in top if n.startswith("postern-"))], top
    assert next(n for n in top if n.startswith("postern-")).endswith(".dist-info")
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import postern.cli, "
             "postern.proxy.session, postern.checkauth, postern.fakes.lab, postern.reports, "
             "postern.loadtest._lab, postern.scenarios.kit.plugin; "
             "import importlib.util as u; "
             "assert all(m.__file__.startswith(sys.argv[1]) for m in "
             "(postern.cli, postern.proxy.session, postern.fakes.lab)); "
             "assert u.find_spec('postern.loadtest') and "
             "(__import__('pathlib').Path(sys.argv[1]) / 'postern/loadtest/profiles.toml').is_file()")
    done = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
