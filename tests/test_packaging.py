"""The wheel holds every module, and importing predlog stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sdk": "predlog", "replay": "predlog.replay", "analysis": "predlog.analysis"}


def _source_modules() -> set[str]:
    names = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            names.add(".".join([package, *parts]))
    return names


@pytest.mark.slow
def test_wheel_contains_and_imports_every_module(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("predlog-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    in_wheel = {f[: -len(".py")].replace("/__init__", "").replace("/", ".") for f in files if f.endswith(".py")}
    missing = _source_modules() - in_wheel
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert "predlog/py.typed" in files
    # Import every module from the unpacked wheel, not from the source tree.
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(tmp_path / 'site')!r})\n"
        f"for name in {sorted(in_wheel)!r}:\n"
        "    mod = importlib.import_module(name)\n"
        f"    assert mod.__file__.startswith({str(tmp_path / 'site')!r}), mod.__file__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_import_predlog_does_not_import_the_reading_side() -> None:
    code = (
        "import sys, predlog\n"
        "heavy = [m for m in ('pandas', 'duckdb', 'scipy', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_source_module_imports() -> None:
    names = sorted(_source_modules())
    assert len(names) > 40, names  # the walk found the packages' modules
    for name in names:
        assert importlib.import_module(name).__name__ == name


def test_public_surface_is_small_and_sorted() -> None:
    import predlog

    assert predlog.__all__ == sorted(predlog.__all__)
    for name in predlog.__all__:
        assert hasattr(predlog, name), name


WITHOUT_OTEL_SDK = """
import sys, importlib.abc

class NoSdk(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.sdk" or name.startswith(("opentelemetry.sdk.", "opentelemetry.exporter")):
            raise ImportError(f"{name} is not installed")
        return None

sys.meta_path.insert(0, NoSdk())
import predlog

rec = predlog.Recorder(store=sys.argv[1], model="m")
predict = rec.capture(lambda x: x["a"] * 2)
assert predict({"a": 21}) == 42
assert rec.flush(timeout_s=30)
s = rec.stats()
assert (s["written"], s["spans"], s["failed"]) == (1, 0, 0), s
assert not [m for m in sys.modules if m.startswith("opentelemetry.sdk")]
print("ok")
"""


def test_capture_needs_only_the_opentelemetry_api(tmp_path: Path) -> None:
    # The SDK and the exporters are the [otlp] extra: predlog's own OTLP pipeline needs them,
    # capture (and spans through an application's own provider) does not.
    result = subprocess.run([sys.executable, "-c", WITHOUT_OTEL_SDK, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
