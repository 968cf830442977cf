"""The README's demo runs, and its monitoring part finds what it plants."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from predlog.replay import Store

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, where: Path) -> str:
    """Run ``examples/<name> <where>`` as a user would; its printed output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), str(where)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_quickstart_finds_the_planted_shift(tmp_path: Path) -> None:
    store = tmp_path / "store"
    out = run_example("quickstart.py", store)
    assert re.search(r"^1 of 30 features drifted .* strongest: features\.mean_texture", out, re.M), out
    shifted = re.search(r"features\.mean_texture mean moved from [\d.]+ to [\d.]+ starting (\S+) 00:00 UTC", out)
    assert shifted, out
    with Store(store) as s:
        first = s.predictions(model="cancer-history", columns=["ts"])["ts"].min()
    assert pd.Timestamp(shifted.group(1), tz="UTC") == first.floor("D") + pd.Timedelta(days=9)
    assert "accuracy by region" in out.lower() and re.search(r"^accuracy 0\.9\d\d \[", out, re.M)
    # The planted failure (kiosk scans, a third of them wrong) is what the investigations find.
    assert re.search(r"^Errors are [\d.]+× more frequent when context\.device = 'kiosk'", out, re.M), out
    assert re.search(r"^The top error slice is context\.device = kiosk:", out, re.M), out
    assert re.search(r"^Largest gap: .*demographic parity difference", out, re.M), out


def test_the_retraining_loop_promotes_the_retrained_model_and_rolls_back_the_broken_one(tmp_path: Path) -> None:
    store = tmp_path / "store"
    out = run_example("retraining_loop.py", tmp_path)
    # One drifted day is not enough to act; three are.
    assert re.search(r"^1\. Alert, one day after .*: Not validated: ", out, re.M), out
    assert re.search(r"^   Alert, today: Validated: ", out, re.M), out
    assert re.search(r"^4\. Held-out check passed: accuracy ", out, re.M), out
    assert re.findall(r"^7\. Canary verdict: (\w+)$", out, re.M) == ["promote", "rollback"], out
    assert re.search(r"^6\. rollback 3\.0: accuracy [\d.]+ vs [\d.]+ \(-\d", out, re.M), out  # names what failed
    with Store(store) as s:
        events = s.events(model="conversion")
        columns = ["model_version", "context.canary_arm"]
        rows = s.predictions(model="conversion", columns=columns, start=events["ts"].min())
    assert list(events["kind"]) == ["start", "promote", "start", "rollback"]
    served = rows.groupby(columns).size()
    assert set(served.index) == {("1.0", "baseline"), ("2.0", "candidate"), ("2.0", "baseline"), ("3.0", "candidate")}
    assert 0.04 < served["3.0", "candidate"] / (served["2.0", "baseline"] + served["3.0", "candidate"]) < 0.06
    assert (tmp_path / "report.html").stat().st_size > 10_000
