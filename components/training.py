"""Train fraud classifiers: XGBoost (default), the RandomForest baseline, logistic regression.

Class imbalance is handled by weighting by default; SMOTE resampling (imbalanced-learn) is an
option. An optional random search tunes hyperparameters on the time-based validation window
within a time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from components.model import FraudModel

__all__ = ["MODEL_TYPES", "TrainConfig", "TrainResult", "train_model"]

MODEL_TYPES = ("xgboost", "random_forest", "logistic_regression")
WEIGHTINGS = ("balanced", "sqrt", "none")

DEFAULTS: dict[str, dict[str, Any]] = {
    "xgboost": {
        "n_estimators": 400,
        "max_depth": 6,
        "learning_rate": 0.05,
        "min_child_weight": 1.0,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "early_stopping_rounds": 60,
    },
    "random_forest": {
        "n_estimators": 150,
        "max_depth": 20,
        "min_samples_leaf": 2,
        "max_features": "sqrt",
    },
    "logistic_regression": {"C": 1.0},
}
SEARCH_SPACE: dict[str, dict[str, list]] = {
    "xgboost": {
        "max_depth": [3, 4, 5, 6, 8],
        "learning_rate": [0.03, 0.05, 0.1, 0.2],
        "min_child_weight": [1.0, 3.0, 10.0],
        "subsample": [0.7, 0.8, 0.9, 1.0],
        "colsample_bytree": [0.6, 0.8, 1.0],
    },
    "random_forest": {"max_depth": [10, 15, 20, None], "min_samples_leaf": [1, 2, 5, 10]},
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0]},
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        model_type: One of :data:`MODEL_TYPES`.
        params: Overrides of the model's default hyperparameters.
        class_weighting: How to weight the fraud class: ``balanced`` (the full genuine/fraud
            ratio), ``sqrt`` (its square root), ``none``, or ``auto`` (the default: train with
            ``sqrt`` and with ``none`` and keep the better on the validation window; on
            skewed fraud data full weighting often costs average precision).
        resampling: ``none`` or ``smote`` (oversample fraud to ``smote_ratio`` of genuine).
        smote_ratio: Minority/majority ratio after SMOTE.
        search_budget_seconds: Time for a random hyperparameter search on the validation
            window (0: no search).
        seed: Random seed; the same seed and data give the same model.
        n_jobs: Threads.
    """

    model_type: str = "xgboost"
    params: dict[str, Any] = field(default_factory=dict)
    class_weighting: str = "auto"
    resampling: str = "none"
    smote_ratio: float = 0.1
    search_budget_seconds: float = 0.0
    seed: int = 42
    n_jobs: int = 2

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r}: choose one of {', '.join(MODEL_TYPES)}"
            )
        if self.class_weighting not in (*WEIGHTINGS, "auto"):
            raise ValueError(
                f"class_weighting {self.class_weighting!r}: choose auto, {', '.join(WEIGHTINGS)}"
            )
        if self.resampling not in ("none", "smote"):
            raise ValueError(f"resampling {self.resampling!r}: choose 'none' or 'smote'")
        unknown = set(self.params) - set(DEFAULTS[self.model_type])
        if unknown:
            raise ValueError(
                f"unknown {self.model_type} parameter(s) {sorted(unknown)}; "
                f"known: {sorted(DEFAULTS[self.model_type])}"
            )


@dataclass
class TrainResult:
    """A trained model and how it was found."""

    model: FraudModel
    params: dict[str, Any]
    valid_average_precision: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_rows: int = 0
    train_rows_after_resampling: int = 0


def _fit(
    config: TrainConfig,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
) -> object:
    params = dict(params)
    weighting = params.pop("class_weighting")
    pos = max(int(y.sum()), 1)
    ratio = {"balanced": (len(y) - pos) / pos, "sqrt": np.sqrt((len(y) - pos) / pos), "none": 1.0}[
        weighting
    ]
    sample_weight = np.where(y == 1, ratio, 1.0)
    if config.model_type == "xgboost":
        import xgboost as xgb

        p = dict(params)
        rounds, early = p.pop("n_estimators"), p.pop("early_stopping_rounds")
        booster_params = {
            "objective": "binary:logistic",
            "eval_metric": "aucpr",
            "tree_method": "hist",
            "seed": config.seed,
            "nthread": config.n_jobs,
            "eta": p.pop("learning_rate"),
            "scale_pos_weight": ratio,
            **p,
        }
        dtrain = xgb.DMatrix(X, label=y)
        dvalid = xgb.DMatrix(X_valid, label=y_valid)
        return xgb.train(
            booster_params,
            dtrain,
            num_boost_round=rounds,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=early,
            verbose_eval=False,
        )
    if config.model_type == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(**params, n_jobs=config.n_jobs, random_state=config.seed)
        return model.fit(X, y, sample_weight=sample_weight)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    model = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            (
                "logreg",
                LogisticRegression(**params, max_iter=2000, random_state=config.seed),
            ),
        ]
    )
    return model.fit(X, y, logreg__sample_weight=sample_weight)


def _smote(X: np.ndarray, y: np.ndarray, names: list[str], config: TrainConfig):
    from imblearn.over_sampling import SMOTE

    medians = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0)
    medians = np.nan_to_num(medians)
    filled = np.where(np.isnan(X), medians, X)
    minority = int(y.sum())
    ratio = max(config.smote_ratio, minority / max(len(y) - minority, 1))
    smote = SMOTE(
        sampling_strategy=ratio, random_state=config.seed, k_neighbors=min(5, minority - 1)
    )
    Xr, yr = smote.fit_resample(filled, y)
    return Xr, yr, {n: float(m) for n, m in zip(names, medians, strict=True)}


def train_model(
    X_train: pd.DataFrame,
    y_train: pd.Series,
    X_valid: pd.DataFrame,
    y_valid: pd.Series,
    config: TrainConfig | None = None,
    progress=None,
) -> TrainResult:
    """Train one model, with an optional time-boxed search on the validation window.

    Args:
        X_train: Training features (columns = feature names).
        y_train: Training labels (0/1).
        X_valid: Validation features, for early stopping and the search.
        y_valid: Validation labels.
        config: Model type, parameters, imbalance handling, search budget.
        progress: Optional callable ``progress(done, total, message)``.

    Raises:
        ValueError: no fraud in the training or validation labels.
    """
    config = config or TrainConfig()
    names = list(X_train.columns)
    y = np.asarray(y_train, dtype=np.int32)
    yv = np.asarray(y_valid, dtype=np.int32)
    for label, values in (("training", y), ("validation", yv)):
        if values.sum() == 0 or values.sum() == len(values):
            raise ValueError(
                f"the {label} window has {int(values.sum())} fraud among {len(values)} rows; "
                "both classes are needed: widen the window or generate more data"
            )
    X = X_train.to_numpy(dtype=np.float32)
    Xv = X_valid.to_numpy(dtype=np.float32)
    fill: dict[str, float] = {}
    rows = len(y)
    if config.resampling == "smote":
        X, y, fill = _smote(X, y, names, config)
        Xv = np.where(np.isnan(Xv), np.array([fill[n] for n in names], np.float32), Xv)

    started = time.perf_counter()
    defaults = DEFAULTS[config.model_type]
    base = {**defaults, **{k: _like(defaults[k], v) for k, v in config.params.items()}}
    weightings = ("sqrt", "none") if config.class_weighting == "auto" else (config.class_weighting,)
    candidates = [{**base, "class_weighting": w} for w in weightings]
    if config.search_budget_seconds > 0:
        rng = np.random.default_rng(config.seed)
        space = {**SEARCH_SPACE[config.model_type], "class_weighting": list(weightings)}
        candidates += [
            {**base, **{k: v[rng.integers(len(v))] for k, v in space.items()}} for _ in range(50)
        ]
    best: tuple[float, dict, object] | None = None
    trials = []
    for i, params in enumerate(candidates):
        if i >= len(weightings) and time.perf_counter() - started > config.search_budget_seconds:
            break
        estimator = _fit(config, params, X, y, Xv, yv)
        model = FraudModel(config.model_type, estimator, names, fill)
        ap = float(average_precision_score(yv, model.predict(Xv)))
        trials.append(
            {"params": {k: _plain(v) for k, v in params.items()}, "valid_average_precision": ap}
        )
        if best is None or ap > best[0]:
            best = (ap, params, estimator)
        if progress:
            progress(i + 1, len(candidates), f"trial {i + 1}: validation AP {ap:.4f}")
    assert best is not None
    ap, params, estimator = best
    return TrainResult(
        model=FraudModel(config.model_type, estimator, names, fill),
        params={k: _plain(v) for k, v in params.items()},
        valid_average_precision=ap,
        trials=trials,
        train_seconds=time.perf_counter() - started,
        train_rows=rows,
        train_rows_after_resampling=len(y),
    )


def _like(default: Any, value: Any) -> Any:
    """``value`` with the type of ``default``: KFP passes dict numbers as floats (1.0 for 1)."""
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected a whole number, got {value}")
        return int(value)
    return value


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
