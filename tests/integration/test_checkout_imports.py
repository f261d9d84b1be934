"""A script run from a checkout imports that checkout's packages, never another checkout's (the
one ``make install`` was run in, which the shared environment finds after the script's folder):
every script below the root puts its repository root first on ``sys.path`` before its first
import of a project package, and every top-level folder of scripts is a regular package (a
namespace folder loses to a regular package of that name anywhere on the path). A worktree
pinned for an experiment then runs its own code."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

#: The project's top-level packages and root modules, as imported by the scripts.
PROJECT = ("utilities", "networks", "data", "experiments", "splits", "benchmarks", "inference", "train_SCM",
           "train_gatedcrfloss3d22d_multiview_varianceloss")


def _scripts() -> list[Path]:
    """The files below the root that run as scripts (``if __name__ == "__main__"``)."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if len(rel.parts) < 2 or rel.parts[0] in ("tests", ".venv") or rel.parts[0].startswith("."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body):
            out.append(path)
    return out


def _first_project_import(tree: ast.Module) -> int | None:
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(n.split(".")[0] in PROJECT for n in names):
            return node.lineno
    return None


def _root_insert(tree: ast.Module, depth: int) -> int | None:
    """The line of ``sys.path.insert(0, str(Path(__file__).resolve().parents[depth]))`` at module
    level (the script's repository root, ``depth`` folders up, put first)."""
    expected = f"sys.path.insert(0, str(Path(__file__).resolve().parents[{depth}]))"
    for node in tree.body:
        if isinstance(node, ast.Expr) and ast.unparse(node) == expected:
            return node.lineno
    return None


def test_every_script_puts_its_checkout_first_before_importing_it():
    scripts = _scripts()
    assert len(scripts) > 20 and ROOT / "experiments" / "ablate.py" in scripts
    problems = []
    for path in scripts:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        first = _first_project_import(tree)
        if first is None:
            continue
        depth = len(path.relative_to(ROOT).parts) - 1
        insert = _root_insert(tree, depth)
        if insert is None or insert > first:
            problems.append(f"{path.relative_to(ROOT)}: line {first} imports the project before "
                            f"sys.path.insert(0, str(Path(__file__).resolve().parents[{depth}]))")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("script", ["utilities/scores.py", "experiments/ablate.py", "data/export_nnunet.py"])
def test_a_script_imports_its_own_checkout_before_another_one(tmp_path, script):
    """Another checkout's packages earlier on the path than the environment's (PYTHONPATH): the
    script still runs with its own."""
    for package in ("utilities", "networks", "data", "experiments"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("raise ImportError('another checkout')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "another checkout" not in done.stderr


def test_every_folder_of_scripts_is_a_regular_package():
    tops = {path.relative_to(ROOT).parts[0] for path in _scripts()}
    assert {"data", "experiments", "splits", "utilities", "benchmarks"} <= tops
    assert sorted(t for t in tops if not (ROOT / t / "__init__.py").is_file()) == []
