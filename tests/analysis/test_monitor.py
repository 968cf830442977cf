"""The monitor: rules over consecutive windows, alerts with their rows, the command line."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import predlog
from predlog.analysis import Alert, Monitor, Profile, RuleCheckError, input_drift, performance, rules
from predlog.replay import Store, UnknownModelError

DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAYS = 10
PER_DAY = 400
BAD_DAYS = {5, 6, 7}  # accuracy drops for three days in a row
BLIP_DAY = 2  # and for one day alone


def day(i: int) -> dt.datetime:
    return DAY0 + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten days of a classifier's predictions, imported with their labels.

    Accuracy is 0.95 on good days and 0.6 on the bad days and the blip day; feature ``x``
    shifts by one standard deviation on the bad days; latency is 5 ms, 50 ms on the bad days.
    """
    store = tmp_path_factory.mktemp("history")
    rng = np.random.default_rng(1)
    frames = []
    for i in range(DAYS):
        bad = i in BAD_DAYS or i == BLIP_DAY
        labels = rng.integers(0, 2, PER_DAY)
        wrong = rng.random(PER_DAY) < (0.4 if bad else 0.05)
        frames.append(
            pd.DataFrame(
                {
                    "ts": day(i) + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, PER_DAY)), unit="ms"),
                    "prediction": np.where(wrong, 1 - labels, labels),
                    "label": labels,
                    "x": rng.normal(1.0 if i in BAD_DAYS else 0.0, 1.0, PER_DAY),
                    "country": rng.choice(["DE", "FR"], PER_DAY),
                    "lat": np.full(PER_DAY, 50.0 if i in BAD_DAYS else 5.0),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    rec = predlog.Recorder(store=str(store), model="churn", version="1.0")
    try:
        ids = rec.log_frame(frame, features=["x", "country"], latency_ms="lat")
        late = frame.assign(prediction_id=ids).iloc[: len(frame) * 9 // 10]  # the last day: 60% labeled
        late = pd.concat(
            [late, frame.assign(prediction_id=ids).iloc[len(frame) * 9 // 10 :].sample(frac=0.6, random_state=1)]
        )
        rec.log_labels(late[["prediction_id", "label"]])
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    return store


def serve(rec: predlog.Recorder, predict: Any, calls: list[dict[str, float]]) -> dt.datetime:
    """Call the captured ``predict`` on each input (its errors are recorded, not raised), seal,
    and return a time just after the last call."""
    captured = rec.capture(predict)
    for x in calls:
        with contextlib.suppress(Exception):  # a failing call is recorded as an error row
            captured(x)
    assert rec.flush(timeout_s=30)
    rec.shutdown()
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)


def test_a_drop_lasting_three_windows_fires_and_a_blip_does_not(history: Path) -> None:
    with Store(history) as s:
        three = Monitor(s, [rules.metric_below("accuracy", 0.85, window="1D", consecutive=3)])
        assert [a.rule for a in three.check(at=day(8))] == ["metric_below"]
        assert three.check(at=day(7)) == []  # only two bad days so far
        assert three.check(at=day(3)) == []  # the blip alone
        one = Monitor(s, [rules.metric_below("accuracy", 0.85, window="1D")])
        assert len(one.check(at=day(3))) == 1  # with consecutive=1 the blip is an alert
        (alert,) = three.check(at=day(8))
    assert isinstance(alert, Alert)
    assert alert.start == day(5) and alert.end == day(8)
    assert [w["breached"] for w in alert.windows] == [True, True, True]
    assert all(0.5 < w["value"] < 0.7 for w in alert.windows)
    assert "accuracy below 0.85 on 3 consecutive 1D windows ending 2026-11-09 00:00 UTC" in alert.reason  # day(8)
    json.dumps(alert.to_dict(), allow_nan=False)
    with Store(history) as s:
        rows = s.predictions(**alert.filters)
    assert len(rows) == 3 * PER_DAY and rows["ts"].min() >= day(5)


def test_operational_rules_and_label_coverage(history: Path) -> None:
    with Store(history) as s:
        monitor = Monitor(
            s,
            [
                rules.latency_above(p95_ms=20, window="1D", consecutive=2),
                rules.error_rate_above(0.01, window="1D"),
                rules.label_coverage_below(0.8, window="1D"),
            ],
        )
        fired = {a.rule: a for a in monitor.check(at=day(7))}
        assert set(fired) == {"latency_above"}
        assert fired["latency_above"].value == pytest.approx(50.0)
        fired = {a.rule: a for a in monitor.check(at=day(10))}
        assert set(fired) == {"label_coverage_below"}  # the last day is 60 % labeled
        assert fired["label_coverage_below"].value == pytest.approx(0.6, abs=0.02)
        last = monitor.last
    assert last is not None and set(last["rule"]) == {"latency_above", "error_rate_above", "label_coverage_below"}
    assert (last.loc[last["rule"] == "error_rate_above", "value"] == 0).all()


def test_drift_rules_compare_against_the_reference(history: Path, tmp_path: Path) -> None:
    with Store(history) as s:
        ref = {"start": day(0), "end": day(2)}
        monitor = Monitor(
            s,
            [rules.feature_drift(["x"], window="1D", consecutive=2), rules.share_drifted(max=0.3, window="1D")],
            reference=ref,
        )
        fired = monitor.check(at=day(7))
        assert {a.rule for a in fired} == {"feature_drift", "share_drifted"}
        assert "drifted: features.x" in fired[0].reason
        assert monitor.check(at=day(10)) == []
        profile = Profile.from_store(s, **ref)
        again = Monitor(s, [rules.feature_drift(["x"], window="1D")], reference=profile)
        assert len(again.check(at=day(6))) == 1
        shift = Monitor(s, [rules.prediction_shift(window="1D")], reference=ref)
        assert shift.check(at=day(10)) == []
        with pytest.raises(ValueError, match="compare against a reference"):
            Monitor(s, [rules.share_drifted()])
        training = pd.DataFrame({"x": np.zeros(50), "country": ["DE"] * 50})  # no prediction column
        with pytest.raises(ValueError, match="prediction_shift compares predictions.*no prediction column"):
            Monitor(s, [rules.prediction_shift(window="1D")], reference=training)


def test_callbacks_see_every_alert_and_a_failing_one_is_logged(history: Path, caplog: Any) -> None:
    seen: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError("webhook down")

    with Store(history) as s:
        monitor = Monitor(s, [rules.latency_above(p50_ms=20, window="1D")], on_alert=[broken, seen.append])
        with caplog.at_level(logging.ERROR, logger="predlog.analysis"):
            alerts = monitor.check(at=day(6))
    assert seen == alerts and len(alerts) == 1
    assert "on_alert callback" in caplog.text and "webhook down" in caplog.text


def test_rules_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="consecutive must be"):
        rules.error_rate_above(0.1, consecutive=0)
    with pytest.raises(ValueError, match="needs a limit"):
        rules.latency_above()
    with pytest.raises(ValueError, match="unknown rule 'nope'.*error_rate_above"):
        rules.from_dict({"rule": "nope"})
    with pytest.raises(ValueError, match="rule 'error_rate_above'.*unexpected keyword argument 'maximum'"):
        rules.from_dict({"rule": "error_rate_above", "maximum": 0.1})
    assert rules.from_dict({"rule": "metric_below", "metric": "f1", "min": 0.5}).describe() == "f1 below 0.5"
    with pytest.raises(ValueError, match=r"max must be a number, got '0.01' \(text: drop the quotes\)"):
        rules.from_dict({"rule": "error_rate_above", "max": "0.01"})
    with pytest.raises(ValueError, match="max must be between 0 and 1, got -1"):
        rules.error_rate_above(-1)
    with pytest.raises(ValueError, match="p95_ms must be >= 0"):
        rules.latency_above(p95_ms=-5)
    assert rules.feature_drift("age").features == ("age",)  # one feature, not its letters
    for make, said in [
        (lambda: rules.error_rate_above(0.1, min_rows="5"), "min_rows must be a whole number"),
        (lambda: rules.metric_below("f1", 0.8, min_labeled=-3), "min_labeled must be a whole number"),
        (lambda: rules.share_drifted(alpha=2), "alpha must be a number between 0 and 1"),
        (lambda: rules.feature_drift(method="bogus"), "method must be one of auto"),
        (lambda: rules.metric_below("f1", math.inf), "min must be a number"),
    ]:
        with pytest.raises(ValueError, match=said):
            make()
    assert rules.error_rate_above(np.float32(0.25)).max == 0.25  # numpy numbers are numbers
    with pytest.raises(ValueError, match="a rule needs a name"):
        rules.from_dict({"max": 0.1})
    with pytest.raises(ValueError, match="metric 'acuracy' is unknown: did you mean 'accuracy'"):
        rules.metric_below("acuracy", 0.8)
    with pytest.raises(
        ValueError, match="rule 'metric_below'.*argument 'consecutiv' is unknown: did you mean 'consecutive'"
    ):
        rules.from_dict({"rule": "metric_below", "metric": "accuracy", "min": 0.8, "consecutiv": 3})


def test_a_monitor_chooses_its_windows_and_latency_is_of_successful_calls(history: Path, tmp_path: Path) -> None:
    with Store(history) as s:
        with pytest.raises(
            ValueError, match=r"Monitor\(\.\.\., last=\): the rules choose their windows.*check\(at=\.\.\.\)"
        ):
            Monitor(s, [rules.error_rate_above(0.1)], last="7d")
    rec = predlog.Recorder(store=str(tmp_path), model="m")

    def predict(x: dict[str, float]) -> float:
        if x["slow"]:
            time.sleep(0.05)
            raise TimeoutError("upstream timed out")
        return 1.0

    now = serve(rec, predict, [{"slow": float(i % 4 == 0)} for i in range(40)])
    with Store(tmp_path) as s:
        assert Monitor(s, [rules.latency_above(p90_ms=20, window="1h")]).check(at=now) == []  # errors left out
        with pytest.raises(
            ValueError, match=r"'mae' is not a metric of model 'm' \(classification\); its metrics are accuracy"
        ):
            Monitor(s, [rules.metric_below("mae", 0.9, window="1h")]).check(at=now)


def test_errors_in_live_traffic_fire_the_error_rate_rule(tmp_path: Path) -> None:
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    now = serve(rec, lambda x: 1 / x["d"], [{"d": 0 if i % 10 == 0 else 1} for i in range(200)])
    with Store(tmp_path) as s:
        (alert,) = Monitor(s, [rules.error_rate_above(0.05, window="1h")]).check(at=now)
    assert alert.value == pytest.approx(0.1)


# ---------------------------------------------------------------- the command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predlog.analysis._cli", *args], capture_output=True, text=True, timeout=120
    )


def test_the_command_line_exits_1_on_an_alert(history: Path, tmp_path: Path) -> None:
    with Store(history) as s:
        Profile.from_store(s, start=day(0), end=day(2)).save(tmp_path / "ref.json")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        """
model = "churn"
[reference]
profile = "ref.json"

[[rules]]
rule = "latency_above"
p95_ms = 20
window = "1D"
consecutive = 2

[[rules]]
rule = "feature_drift"
features = ["x"]
window = "1D"
"""
    )
    bad = run_cli("monitor", str(history), "--rules", str(rules_file), "--at", "2026-11-08", "--format", "json")
    assert bad.returncode == 1, bad.stderr
    alerts = json.loads(bad.stdout)
    assert {a["rule"] for a in alerts} == {"latency_above", "feature_drift"}
    good = run_cli("monitor", str(history), "--rules", str(rules_file), "--at", "2026-11-03")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("no alert: 2 rules checked for churn")
    every = run_cli(
        "monitor", "--store", str(history), "--rules", str(rules_file), "--at", "2026-11-03", "--all", "-f", "csv"
    )
    assert every.returncode == 0 and every.stdout.count("latency_above") == 2
    rules_file.write_text('[[rules]]\nrule = "nope"\n')
    usage = run_cli("monitor", str(history), "--rules", str(rules_file))
    assert usage.returncode == 2 and "unknown rule 'nope'" in usage.stderr
    # Whatever stops the check is 2, never 1 (which cron and CI read as an alert).
    rules_file.write_text('model = "churn"\n[reference]\nprofile = "nope.json"\n[[rules]]\nrule = "share_drifted"\n')
    missing = run_cli("monitor", str(history), "--rules", str(rules_file))
    assert missing.returncode == 2 and "[reference] profile = 'nope.json'" in missing.stderr
    for text, said in [
        ('model = "churm"\n', "Did you mean 'churn'"),
        ('model = "churn"\n[reference]\nversion = "1"\n', "'1.0'"),
        ('model = "churn"\n', "'mae' is not a metric of model 'churn'"),
    ]:
        rules_file.write_text(text + '[[rules]]\nrule = "metric_below"\nmetric = "mae"\nmin = 1\n')
        got = run_cli("monitor", str(history), "--rules", str(rules_file), "--at", "2026-11-08")
        assert got.returncode == 2 and said in got.stderr, got.stderr
        if "not a metric" in said:  # the monitor ran: it says so, and that nothing was checked
            assert got.stdout == "no alert: 0 rules checked for churn; 1 could not be checked\n"
    nowhere = run_cli("monitor", str(tmp_path / "no-store"), "--rules", str(rules_file))
    assert nowhere.returncode == 2, nowhere.stderr
    # A rule that cannot be checked does not hide the alert of another: exit 1, the broken rule on stderr.
    rules_file.write_text(
        'model = "churn"\n[[rules]]\nrule = "metric_below"\nmetric = "mae"\nmin = 1\n'
        '[[rules]]\nrule = "latency_above"\np95_ms = 20\nwindow = "1D"\n'
    )
    both = run_cli("monitor", str(history), "--rules", str(rules_file), "--at", "2026-11-08", "--format", "json")
    assert both.returncode == 1 and [a["rule"] for a in json.loads(both.stdout)] == ["latency_above"]
    assert "rule 'mae below 1' could not be checked" in both.stderr
    with Store(history) as s:
        seen: list[Alert] = []
        monitor = Monitor(
            s, [rules.metric_below("mae", 1), rules.latency_above(p95_ms=20, window="1D")], on_alert=seen.append
        )
        with pytest.raises(
            RuleCheckError, match="1 rule.*could not be checked: mae below 1.*1 alert from the other rules"
        ) as info:
            monitor.check(at=day(8))
    assert [a.rule for a in info.value.alerts] == ["latency_above"] == [a.rule for a in seen]
    query = run_cli("query", "--store", str(history), "select count(*) as n from predictions", "-f", "json")
    assert query.returncode == 0 and json.loads(query.stdout) == [{"n": DAYS * PER_DAY}]


def test_rows_still_in_live_segments_are_analysed_with_include_live(tmp_path: Path) -> None:
    """A service that started a minute ago: its rows are all in the write-ahead segment."""
    rec = predlog.Recorder(store=str(tmp_path), model="fresh", segment_max_age_s=3600, flush_interval_s=0.05)
    rng = np.random.default_rng(3)
    predict = rec.capture(lambda x: float(x["a"] > 0))
    for a in rng.normal(size=300):
        predict({"a": float(a)})
    try:
        deadline = time.monotonic() + 30
        while rec.stats()["written"] < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        with Store(tmp_path) as s:
            assert s.models() == [] and s.models(include_live=True) == ["fresh"]
            with pytest.raises(UnknownModelError, match="holds no predictions yet.*include_live=True"):
                performance(s)
            res = performance(s, window="1h", include_live=True)
            assert int(res.overall["rows"].iloc[0]) == 300
            frame = pd.DataFrame({"a": rng.normal(size=300)})
            assert input_drift(s, frame, {"include_live": True}).summary["model"] == "fresh"
            assert Profile.from_store(s, include_live=True).rows == 300
    finally:
        rec.shutdown()
