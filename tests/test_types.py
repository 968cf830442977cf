"""predlog, predlog.replay and predlog.analysis type-check in mypy's strict mode (pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_tree(tmp_path: Path) -> Path:
    """``predlog`` as the wheel lays it out, made of links to the source folders, so mypy
    resolves every package from source whatever the install mode."""
    pkg = tmp_path / "src" / "predlog"
    pkg.mkdir(parents=True)
    for f in (ROOT / "sdk").iterdir():
        if f.suffix in (".py", ".typed"):
            (pkg / f.name).symlink_to(f)
    (pkg / "replay").symlink_to(ROOT / "replay", target_is_directory=True)
    (pkg / "analysis").symlink_to(ROOT / "analysis", target_is_directory=True)
    return pkg.parent


@pytest.mark.slow
def test_every_package_is_strictly_typed(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    src = source_tree(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "predlog"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(src)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in" in result.stdout and "source files" in result.stdout


@pytest.mark.slow
def test_decorated_functions_keep_their_signatures(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    sample = ROOT / "tests" / "typing" / "capture_signatures.py"
    # mypy resolves ``predlog`` from source whatever the install mode: predlog -> sdk/.
    (tmp_path / "predlog").symlink_to(ROOT / "sdk", target_is_directory=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-site-packages",
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--config-file",
            "/dev/null",
            str(sample),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
