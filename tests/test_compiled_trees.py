"""The compiled trees (components.compiled_trees) against XGBoost itself, to the bit.

Real boosters: the shared tiny bundle's model, and small boosters trained here on data with
missing values, repeated splits on one feature and deep trees, so every branch of the walk
(NaN to the default side, ``x < threshold`` exactly at the threshold, a feature split twice
on a path) is exercised.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import xgboost as xgb
from serving_helpers import later_transactions, shared_model

from components.bundle import fetch_bundle
from components.compiled_trees import BLOCK, compiled_trees, from_booster, probe_matrix
from components.features import compute_features
from components.store import LocalStore


def _booster(objective: str = "binary:logistic", seed: int = 0, **params) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.15] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2) > 1).astype(float)
    params = {"objective": objective, "max_depth": 8, "eta": 0.3, "seed": seed, **params}
    return xgb.train(params, xgb.DMatrix(X, y, missing=np.nan), num_boost_round=25)


def _repeats_on_a_path(trees, t: int, at: int = 0, seen: tuple[int, ...] = ()) -> bool:
    if at >= trees.split.shape[1] or not trees.split[t, at]:
        return False
    feature = int(trees.feature[t, at])
    if feature in seen:
        return True
    seen = (*seen, feature)
    return _repeats_on_a_path(trees, t, 2 * at + 1, seen) or _repeats_on_a_path(
        trees, t, 2 * at + 2, seen
    )


def _xgboost(booster: xgb.Booster, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dm = xgb.DMatrix(matrix, missing=np.nan)
    return booster.predict(dm), booster.predict(dm, pred_contribs=True, approx_contribs=True)


def test_scores_and_contributions_equal_xgboost_on_served_features(tmp_path_factory):
    trained = shared_model(tmp_path_factory)
    bundle = fetch_bundle(
        LocalStore(trained.store), trained.name, "champion", tmp_path_factory.mktemp("b")
    )
    model = bundle.model()
    trees = model.compiled_trees()
    assert trees is not None, "the default XGBoost model must compile"
    features = compute_features(later_transactions(300), bundle.spec())
    matrix = features[model.feature_names].to_numpy(np.float32)
    assert np.isnan(matrix).any()  # windows without history: the default direction is used
    want_scores, want_contributions = _xgboost(model.estimator, matrix)
    scores, contributions = trees.explain(matrix)
    np.testing.assert_array_equal(trees.scores(matrix), want_scores)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(contributions, want_contributions)
    # what the server calls: every row, alerts only, one row at a time
    threshold = float(np.quantile(want_scores, 0.9))
    explained = model.explain(matrix, threshold, "approx")
    np.testing.assert_array_equal(explained.rows, np.flatnonzero(want_scores >= threshold))
    np.testing.assert_array_equal(explained.contributions, want_contributions[explained.rows, :-1])
    one = model.explain(matrix[7:8], -np.inf, "approx")
    assert one.score[0] == want_scores[7]
    np.testing.assert_array_equal(one.contributions[0], want_contributions[7, :-1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_deep_trees_with_missing_values_and_repeated_splits(seed):
    booster = _booster(seed=seed)
    trees = compiled_trees(booster, 6)
    assert trees is not None
    # some path splits on one feature twice (its deltas add up within the tree first)
    assert any(_repeats_on_a_path(trees, t) for t in range(len(trees.leaf)))
    # leaves above the deepest level (padded with pass-through nodes)
    assert (~trees.split).any()
    rng = np.random.default_rng(seed + 10)
    matrix = np.vstack([probe_matrix(trees, 300, seed), rng.normal(size=(300, 6))]).astype(
        np.float32
    )
    matrix[:5] = np.nan  # every feature missing
    want_scores, want_contributions = _xgboost(booster, matrix)
    scores, contributions = trees.explain(matrix)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(contributions, want_contributions)
    few = slice(3, 3 + BLOCK + 5)  # a last block that is not full
    np.testing.assert_array_equal(trees.scores(matrix[few]), want_scores[few])
    np.testing.assert_array_equal(trees.explain(matrix[few])[1], want_contributions[few])


def test_trees_without_splits():
    booster = _booster(min_child_weight=1e6)  # no split is allowed: every tree is one leaf
    trees = compiled_trees(booster, 6)
    assert trees is not None and trees.depth == 0
    matrix = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    want_scores, want_contributions = _xgboost(booster, matrix)
    scores, contributions = trees.explain(matrix)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(contributions, want_contributions)


def test_trees_too_deep_to_pad_are_left_to_xgboost(monkeypatch, caplog):
    monkeypatch.setattr("components.compiled_trees.MAX_TABLE_BYTES", 10_000)
    with caplog.at_level(logging.INFO, logger="fraudops.model"):
        assert compiled_trees(_booster(), 6) is None
    assert "too deep to compile" in caplog.text


def test_at_the_threshold_a_value_goes_right():
    booster = _booster()
    trees = from_booster(booster, 6)
    feature, threshold = trees.feature[0, 0], trees.threshold[0, 0]  # the first root
    x = np.zeros((2, 6), np.float32)
    x[:, feature] = threshold
    x[1, feature] = np.nextafter(threshold, np.float32(-np.inf))
    want, _ = _xgboost(booster, x)
    np.testing.assert_array_equal(trees.scores(x), want)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"objective": "reg:squarederror"}, "only binary:logistic"),
        ({"booster": "dart", "rate_drop": 0.1}, "only binary:logistic gbtree"),
    ],
)
def test_other_models_are_left_to_xgboost(params, reason, caplog):
    objective = params.pop("objective", "binary:logistic")
    booster = _booster(objective, **params)
    with pytest.raises(ValueError, match=reason):
        from_booster(booster, 6)
    with caplog.at_level(logging.INFO, logger="fraudops.model"):
        assert compiled_trees(booster, 6) is None
    assert "scoring with XGBoost" in caplog.text


def test_a_difference_from_xgboost_is_caught_and_xgboost_used(monkeypatch, caplog):
    booster = _booster()
    real = from_booster

    def off_by_one_step(b, n):  # one threshold a float step lower: a wrong model
        trees = real(b, n)
        t, at = np.argwhere(trees.split)[3]
        trees.threshold[t, at] = np.nextafter(trees.threshold[t, at], np.float32(-1e30))
        return trees

    monkeypatch.setattr("components.compiled_trees.from_booster", off_by_one_step)
    with caplog.at_level(logging.WARNING, logger="fraudops.model"):
        assert compiled_trees(booster, 6) is None
    assert "differ from XGBoost" in caplog.text
