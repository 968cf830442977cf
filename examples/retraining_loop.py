"""The retraining loop, end to end: drift, a validated alert, retraining, a canary, a verdict.

    python examples/retraining_loop.py [DIR]     # DIR/store, and the report DIR/report.html

An online shop serves a conversion model (will this visit end in a purchase?) with
``@predlog.capture``. Three weeks of traffic are imported day by day with ``log_frame``
timestamps (no sleeping): two stable weeks, then younger shoppers arrive, on phones and
for fashion and beauty, who buy for other reasons than the shoppers the model was trained
on. The loop:

1. the drift alert is validated: it held for three days in a row (a single day is not enough);
2. the labeled data of the last 30 days is fetched, the latest two days held out;
3. a new model is trained on it;
4. the new model is checked against the old one on the held-out days;
5. it is deployed as a canary on 5 % of the users;
6. a day of traffic goes through the canary, and the purchases (labels) come in;
7. the verdict: promote.

A second round deploys a candidate with a serving bug (it reads prices in cents): fine on
the held-out days, worse in production, and the verdict is rollback. Every step's evidence
goes into one HTML report.
"""

from __future__ import annotations

import os

# One OpenMP thread: a model answering one request at a time gains nothing from more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import predlog  # noqa: E402
from predlog.analysis import Monitor, compare_versions, report, retrain, rules  # noqa: E402
from predlog.replay import Store  # noqa: E402

MODEL = "conversion"
CATEGORIES = ["electronics", "home", "garden", "fashion", "beauty"]
DEVICES = ["desktop", "mobile", "tablet"]
STABLE_DAYS, NEW_DAYS = 14, 7  # two stable weeks, then a week with the new shoppers
PER_DAY = 1500
CANARY_CALLS = 16_000  # a day of live traffic through the canary


# ---------------------------------------------------------------- the shop (what is planted)


def visits(rng: np.random.Generator, n: int, young_share: float) -> pd.DataFrame:
    """``n`` visits; ``young_share`` of them from the new, younger shoppers."""
    young = rng.random(n) < young_share
    return pd.DataFrame(
        {
            "age": np.where(young, rng.integers(18, 30, n), rng.integers(30, 75, n)),
            "device": np.where(
                young,
                rng.choice(DEVICES, n, p=[0.1, 0.8, 0.1]),
                rng.choice(DEVICES, n, p=[0.6, 0.25, 0.15]),
            ),
            "category": np.where(
                young,
                rng.choice(CATEGORIES, n, p=[0.1, 0.05, 0.05, 0.45, 0.35]),
                rng.choice(CATEGORIES, n, p=[0.35, 0.3, 0.2, 0.1, 0.05]),
            ),
            "price": np.round(rng.lognormal(3.5, 0.7, n), 2),
            "pages": rng.integers(1, 25, n),
            "returning": rng.random(n) < 0.4,
        }
    )


def purchases(rng: np.random.Generator, v: pd.DataFrame) -> np.ndarray:
    """Who buys. Older shoppers come back and read many pages before buying; younger ones
    buy fashion and beauty on their phones, and a returning visit means nothing to them."""
    young = v["age"] < 30
    style = v["category"].isin(["fashion", "beauty"])
    mobile = v["device"] == "mobile"
    older = -2.2 + 1.6 * v["returning"] + 0.12 * v["pages"] - 0.01 * v["price"]
    younger = -1.2 + 1.8 * (style & mobile) + 0.6 * style - 1.2 * v["returning"] - 0.02 * v["price"] + 0.02 * v["pages"]
    logit = np.where(young, younger, older)
    return (rng.random(len(v)) < 1 / (1 + np.exp(-logit))).astype(int)


# ---------------------------------------------------------------- the model


def encode(v: Mapping[str, Any], cents: bool = False) -> np.ndarray:
    """Model inputs: the features, one-hot categories, and interactions for shoppers under 30.

    ``v`` maps each feature to an array: a frame's columns, or one visit's values.
    """
    age = np.asarray(v["age"], dtype=float)
    device, category = np.asarray(v["device"]), np.asarray(v["category"])
    price = np.asarray(v["price"], dtype=float) * (100 if cents else 1)
    young = (age < 30).astype(float)
    mobile = (device == "mobile").astype(float)
    style = np.isin(category, ["fashion", "beauty"]).astype(float)
    returning = np.asarray(v["returning"], dtype=float)
    columns = [
        age / 50,
        young,
        mobile,
        (device == "tablet").astype(float),
        *((category == c).astype(float) for c in CATEGORIES[1:]),
        price / 100,
        np.asarray(v["pages"], dtype=float) / 10,
        returning,
        young * mobile * style,
        young * style,
        young * returning,
        young * price / 100,
    ]
    return np.column_stack(columns)


def fit(v: pd.DataFrame, y: Any) -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=1000).fit(encode(v), y)


def served_by(model: LogisticRegression, version: str, cents: bool = False) -> Callable[[dict[str, Any]], float]:
    """A predict function for one request, recorded by predlog as ``version``."""
    w, b = model.coef_[0], float(model.intercept_[0])

    @predlog.capture(version=version, confidence=lambda p: max(p, 1 - p))
    def predict(visit: dict[str, Any]) -> float:
        x = encode({k: [value] for k, value in visit.items()}, cents=cents)[0]
        return float(1 / (1 + np.exp(-(x @ w + b))))

    return predict


# ---------------------------------------------------------------- the story


def main(workdir: Path) -> None:
    store = workdir / "store"
    rng = np.random.default_rng(7)
    predlog.configure(store=str(store), model=MODEL, version="1.0")

    # The model in production was trained on last year's shoppers (no one under 30).
    train_old = visits(rng, 6000, young_share=0.0)
    v1 = fit(train_old, purchases(rng, train_old))
    predict_v1 = served_by(v1, "1.0")

    # Three weeks of its traffic, imported day by day; the new shoppers arrive after two weeks.
    now = pd.Timestamp.now(tz="UTC").floor("h")
    first_day = now.floor("D") - pd.Timedelta(days=STABLE_DAYS + NEW_DAYS)
    for day in range(STABLE_DAYS + NEW_DAYS):
        young_share = 0.0 if day < STABLE_DAYS else min(0.5, 0.25 + 0.05 * (day - STABLE_DAYS))
        v = visits(rng, PER_DAY, young_share)
        start = first_day + pd.Timedelta(days=day)
        ts = start + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, PER_DAY)), unit="ms")
        p = 1 / (1 + np.exp(-(encode(v) @ v1.coef_[0] + v1.intercept_[0])))
        frame = v.assign(ts=ts, prediction=p, confidence=np.maximum(p, 1 - p))
        frame["user_id"] = [f"user-{u}" for u in rng.integers(0, 50_000, PER_DAY)]
        ids = predlog.log_frame(
            frame, version="1.0", features=list(v.columns), user_id="user_id", confidence="confidence"
        )
        predlog.log_labels(pd.DataFrame({"prediction_id": ids, "label": purchases(rng, v)}))
    assert predlog.flush(timeout_s=60)
    today = first_day + pd.Timedelta(days=STABLE_DAYS + NEW_DAYS)

    steps: list[Any] = []
    verdicts: list[Any] = []
    with Store(store) as s:
        # 1. Is the drift alert real? The monitor compares each day with the training set.
        monitor = Monitor(s, [rules.share_drifted(0.3, window="1D")], reference=train_old)
        first = retrain.validate_alert(monitor, consecutive=3, at=first_day + pd.Timedelta(days=STABLE_DAYS + 1))
        print("1. Alert, one day after the new shoppers arrived:", first.summary["text"])
        alert = retrain.validate_alert(monitor, consecutive=3, at=today)
        print("   Alert, today:", alert.summary["text"])
        steps.append(alert)
        if not alert.validated:
            raise SystemExit("the alert did not hold; nothing to retrain")

        # 2. The labeled data of the last 30 days, the latest two days held out.
        window = retrain.training_window(s, days=30, holdout_days=2, end=today)
        print("2.", window.summary["text"])
        steps.append(window)

    # 3. Retrain on it.
    v2 = fit(window.X_train, window.y_train)
    predict_v2 = served_by(v2, "2.0")

    # 4. Check the new model against the old one on the held-out days.
    check = retrain.holdout_check(
        lambda X: (v2.predict_proba(encode(X))[:, 1] >= 0.5).astype(int),
        lambda X: (v1.predict_proba(encode(X))[:, 1] >= 0.5).astype(int),
        window,
    )
    print("4.", check.summary["text"])
    steps.append(check)
    if not check.passed:
        raise SystemExit("the new model is worse on the held-out days; not deploying it")

    # 5-7. A canary on 5 % of the users for a day, then the verdict.
    router = predlog.canary(baseline=predict_v1, candidate=predict_v2, share=0.05, key="user_id")
    verdict = canary_day(store, router, rng, baseline="1.0", candidate="2.0")
    verdicts.append(verdict)
    if verdict.decision == "promote":
        router.promote(reason=verdict.reasons[0] if verdict.reasons else "")

    # A second round: version 3.0 is the same kind of model, deployed with a serving bug (it
    # reads prices in cents). It would pass the held-out check (the bug is not in the model),
    # and production shows it.
    print("\nSecond round: candidate 3.0")
    predict_v3 = served_by(v2, "3.0", cents=True)
    router2 = predlog.canary(baseline=predict_v2, candidate=predict_v3, share=0.05, key="user_id")
    verdict2 = canary_day(store, router2, rng, baseline="2.0", candidate="3.0")
    verdicts.append(verdict2)
    if verdict2.decision == "rollback":
        router2.rollback(reason=verdict2.reasons[0] if verdict2.reasons else "")
    predlog.shutdown()

    with Store(store) as s:
        print("\nEvents:")
        print(
            s.events(model=MODEL)[["ts", "kind", "baseline_version", "candidate_version", "share"]].to_string(
                index=False
            )
        )
        path = report(
            s,
            workdir / "report.html",
            model=MODEL,
            reference=train_old,
            sensitive="features.age",
            steps=steps,
            verdicts=verdicts,
        )
    print(f"\nReport: {path}")


def canary_day(store: Path, router: Any, rng: np.random.Generator, *, baseline: str, candidate: str) -> Any:
    """A day of live traffic through the router; purchases come in later, then the verdict."""
    started = pd.Timestamp.now(tz="UTC")
    v = visits(rng, CANARY_CALLS, young_share=0.5)
    users = [f"user-{u}" for u in rng.integers(0, 50_000, CANARY_CALLS)]
    requests = [f"req-{candidate}-{i}" for i in range(CANARY_CALLS)]
    for visit, user, request in zip(v.to_dict("records"), users, requests, strict=True):
        with predlog.context(user_id=user, request_id=request):
            router(visit)
    predlog.log_labels(
        pd.DataFrame({"request_id": requests, "label": purchases(rng, v)}), prediction_id=None, request_id="request_id"
    )
    assert predlog.flush(timeout_s=60)
    served = router.stats()["candidate_calls"]
    print(f"5. Canary: {served:,} of {CANARY_CALLS:,} calls ({served / CANARY_CALLS:.2%}) served by {candidate}")
    with Store(store) as s:
        verdict = compare_versions(s, baseline=baseline, candidate=candidate, model=MODEL, start=started)
    print(f"6. {verdict.summary['text']}")
    for reason in verdict.reasons:
        print(f"   - {reason}")
    print(f"7. Canary verdict: {verdict.decision}")
    return verdict


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="predlog-retraining-"))
        try:
            main(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            print(
                "(temporary store removed; run `python examples/retraining_loop.py DIR` to keep the store and the report)"
            )
