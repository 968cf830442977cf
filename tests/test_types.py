"""The capture package type-checks in mypy's strict mode (configured in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sdk_is_strictly_typed() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_decorated_functions_keep_their_signatures(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    sample = ROOT / "tests" / "typing" / "capture_signatures.py"
    # mypy resolves ``predlog`` from source whatever the install mode: predlog -> sdk/.
    (tmp_path / "predlog").symlink_to(ROOT / "sdk", target_is_directory=True)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-site-packages", "--ignore-missing-imports",
         "--follow-imports=silent", "--config-file", "/dev/null", str(sample)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
