"""Split by time, training options, evaluation metrics and threshold policies."""

import numpy as np
import pandas as pd
import pytest

from components.evaluation import (
    ThresholdPolicy,
    card_precision_at_k,
    choose_threshold,
    evaluate_scores,
    recall_at_fpr,
)
from components.features import FeatureSpec, compute_features
from components.split import explicit_windows, plan_windows, split_by_time
from components.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def windows_data(small_frame):
    spec = FeatureSpec()
    features = compute_features(small_frame, spec)
    plan = plan_windows(
        small_frame["timestamp"], test_days=5, valid_days=5, gap_days=3, burn_in_days=3
    )
    masks = split_by_time(small_frame["timestamp"], plan)
    y = small_frame["is_fraud"]
    return {n: (features[m], y[m]) for n, m in masks.items()}


def test_windows_are_laid_out_backwards_with_gaps(small_frame):
    plan = plan_windows(
        small_frame["timestamp"], test_days=5, valid_days=4, gap_days=3, burn_in_days=2
    )
    day = pd.Timedelta(days=1)
    assert plan.test_end == small_frame["timestamp"].max() + pd.Timedelta(seconds=1)
    assert plan.test_end - plan.test_start == 5 * day
    assert plan.test_start - plan.valid_end == 3 * day
    assert plan.valid_end - plan.valid_start == 4 * day
    assert plan.valid_start - plan.train_end == 3 * day
    assert plan.train_start == small_frame["timestamp"].min() + 2 * day
    masks = split_by_time(small_frame["timestamp"], plan)
    assert (
        not (masks["train"] & masks["valid"]).any() and not (masks["valid"] & masks["test"]).any()
    )
    # the last training transaction is more than a gap before the first validation one
    gap = (
        small_frame.loc[masks["valid"], "timestamp"].min()
        - small_frame.loc[masks["train"], "timestamp"].max()
    )
    assert gap > 3 * day


def test_windows_from_explicit_dates_and_errors(small_frame):
    plan = explicit_windows(
        train_start="2026-04-02",
        train_end="2026-04-15",
        valid_start="2026-04-18",
        valid_end="2026-04-22",
        test_start="2026-04-25",
        test_end="2026-04-30",
    )
    masks = split_by_time(small_frame["timestamp"], plan)
    assert small_frame.loc[masks["test"], "timestamp"].min() >= pd.Timestamp("2026-04-25", tz="UTC")
    with pytest.raises(ValueError, match=r"covers 30.0 days, too short"):
        plan_windows(small_frame["timestamp"], test_days=14, valid_days=14)
    empty = explicit_windows(
        train_start="2026-04-02",
        train_end="2026-04-15",
        valid_start="2026-04-18",
        valid_end="2026-04-22",
        test_start="2027-01-01",
        test_end="2027-01-05",
    )
    with pytest.raises(ValueError, match="no transactions in the test window"):
        split_by_time(small_frame["timestamp"], empty)


def test_same_data_and_seed_give_the_same_model(windows_data):
    (X, y), (Xv, yv), (Xt, _) = windows_data["train"], windows_data["valid"], windows_data["test"]
    a = train_model(X, y, Xv, yv, TrainConfig(seed=3))
    b = train_model(X, y, Xv, yv, TrainConfig(seed=3))
    np.testing.assert_array_equal(a.model.predict(Xt), b.model.predict(Xt))
    assert a.params == b.params


def test_auto_weighting_tries_both_and_keeps_the_better(windows_data):
    (X, y), (Xv, yv) = windows_data["train"], windows_data["valid"]
    result = train_model(X, y, Xv, yv, TrainConfig(class_weighting="auto"))
    tried = {t["params"]["class_weighting"]: t["valid_average_precision"] for t in result.trials}
    assert set(tried) == {"sqrt", "none"}
    assert result.valid_average_precision == max(tried.values())
    assert result.params["class_weighting"] == max(tried, key=tried.get)


@pytest.mark.parametrize("model_type", ["random_forest", "logistic_regression"])
def test_baselines_train_and_rank_fraud_above_chance(windows_data, model_type):
    (X, y), (Xv, yv) = windows_data["train"], windows_data["valid"]
    params = {"n_estimators": 30} if model_type == "random_forest" else {}
    result = train_model(
        X, y, Xv, yv, TrainConfig(model_type=model_type, params=params, class_weighting="sqrt")
    )
    assert result.valid_average_precision > 5 * yv.mean()  # far better than random ranking


def test_smote_resamples_and_remembers_the_fill_values(windows_data):
    (X, y), (Xv, yv) = windows_data["train"], windows_data["valid"]
    result = train_model(
        X, y, Xv, yv, TrainConfig(resampling="smote", smote_ratio=0.2, class_weighting="none")
    )
    fraud, genuine = int(y.sum()), int((y == 0).sum())
    assert result.train_rows == len(y)
    assert result.train_rows_after_resampling == genuine + int(0.2 * genuine)
    assert fraud < int(0.2 * genuine)
    assert set(result.model.fill_values) == set(X.columns)
    assert np.isfinite(result.model.predict(Xv)).all()


def test_search_runs_more_trials_within_its_budget(windows_data):
    (X, y), (Xv, yv) = windows_data["train"], windows_data["valid"]
    result = train_model(X, y, Xv, yv, TrainConfig(class_weighting="none", search_budget_seconds=3))
    assert len(result.trials) >= 3
    assert result.valid_average_precision == max(
        t["valid_average_precision"] for t in result.trials
    )


def test_bad_training_configuration_is_explained(windows_data):
    with pytest.raises(ValueError, match="choose one of xgboost"):
        TrainConfig(model_type="catboost")
    with pytest.raises(ValueError, match=r"unknown xgboost parameter\(s\) \['depth'\]"):
        TrainConfig(params={"depth": 3})
    (X, y), (Xv, yv) = windows_data["train"], windows_data["valid"]
    with pytest.raises(ValueError, match="training window has 0 fraud"):
        train_model(X, y * 0, Xv, yv)


def test_card_precision_at_k_by_hand():
    ts = pd.Series(pd.to_datetime(["2026-04-01T10:00Z"] * 4 + ["2026-04-02T10:00Z"] * 3))
    cards = pd.Series(["a", "a", "b", "c", "a", "b", "c"])
    y = np.array([0, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.9, 0.5])
    # day 1: cards a (max 0.9, fraud), b (0.8), c (0.2) -> top 2: a, b -> 1/2
    # day 2: b (0.9), c (0.5, fraud), a (0.3) -> top 2: b, c -> 1/2
    assert card_precision_at_k(cards, ts, y, scores, k=2) == 0.5
    assert card_precision_at_k(cards, ts, y, scores, k=1) == 0.5  # day 1: a (fraud); day 2: b


def test_recall_at_fpr_by_hand():
    y = np.array([0] * 100 + [1] * 4)
    scores = np.concatenate([np.linspace(0, 0.5, 100), [0.99, 0.98, 0.3, 0.1]])
    assert recall_at_fpr(y, scores, fpr=0.0) == 0.5
    assert recall_at_fpr(y, scores, fpr=0.5) == 0.75


def test_threshold_policies():
    rng = np.random.default_rng(0)
    y = (rng.random(7000) < 0.02).astype(int)
    scores = np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1)
    budget = choose_threshold(
        y, scores, days=7, policy=ThresholdPolicy("alert_budget", alerts_per_day=20)
    )
    assert (scores >= budget["threshold"]).sum() == 140
    target = choose_threshold(
        y, scores, days=7, policy=ThresholdPolicy("target_precision", precision=0.6)
    )
    flagged = scores >= target["threshold"]
    assert target["target_met"] and y[flagged].mean() >= 0.6
    # the highest score is a genuine transaction: no threshold reaches 100% precision
    tricky = scores.copy()
    tricky[np.flatnonzero(y == 0)[0]] = 2.0
    impossible = choose_threshold(
        y, tricky, days=7, policy=ThresholdPolicy("target_precision", precision=1.0)
    )
    assert impossible["target_met"] is False
    assert "not reachable" in impossible["policy"]
    assert ThresholdPolicy.parse("alert_budget:50").alerts_per_day == 50
    assert ThresholdPolicy.parse("target_precision:0.9").precision == 0.9
    with pytest.raises(ValueError, match="use alert_budget"):
        ThresholdPolicy.parse("budget:5")
    with pytest.raises(ValueError, match="is not a number"):
        ThresholdPolicy.parse("alert_budget:lots")


def test_evaluation_numbers_are_consistent():
    ts = pd.Series(pd.date_range("2026-04-01", periods=200, freq="h", tz="UTC"))
    cards = pd.Series([f"c{i % 17}" for i in range(200)])
    y = np.array([1 if i % 20 == 0 else 0 for i in range(200)])
    scores = np.where(y == 1, 0.8, 0.1) + np.linspace(0, 0.05, 200)
    e = evaluate_scores(y, scores, 0.5, cards, ts, k=3)
    assert (e.tp, e.fp, e.fn) == (10, 0, 0) and e.tn == 190
    assert e.average_precision == 1.0 and e.roc_auc == 1.0 and e.precision == 1.0 and e.f1 == 1.0
    with pytest.raises(ValueError, match="only genuine transactions"):
        evaluate_scores(y * 0, scores, 0.5, cards, ts)
