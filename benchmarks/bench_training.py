"""Training: XGBoost against the RandomForest baseline and logistic regression on 1M rows."""

import time

from benchmarks.harness import Figure
from components.evaluation import ThresholdPolicy, choose_threshold, evaluate_scores
from components.features import FeatureSpec, compute_features
from components.generator import GeneratorConfig, generate_transactions
from components.split import plan_windows, split_by_time
from components.training import MODEL_TYPES, TrainConfig, train_model

N = 1_000_000


def run() -> list[Figure]:
    frame = generate_transactions(GeneratorConfig.for_transactions(N, n_days=90, seed=7))
    started = time.perf_counter()
    features = compute_features(frame, FeatureSpec())
    feature_seconds = time.perf_counter() - started
    plan = plan_windows(frame["timestamp"])
    masks = split_by_time(frame["timestamp"], plan)
    y = frame["is_fraud"]
    figures = [
        Figure(
            "features for 1M transactions", feature_seconds, "s", "", None, f"{len(frame):,} rows"
        ),
    ]
    ap = {}
    for model_type in MODEL_TYPES:
        started = time.perf_counter()
        result = train_model(
            features[masks["train"]],
            y[masks["train"]],
            features[masks["valid"]],
            y[masks["valid"]],
            TrainConfig(model_type=model_type),
        )
        seconds = time.perf_counter() - started
        valid_scores = result.model.predict(features[masks["valid"]])
        threshold = choose_threshold(
            y[masks["valid"]], valid_scores, 7, ThresholdPolicy("alert_budget", alerts_per_day=100)
        )["threshold"]
        test = frame[masks["test"]]
        e = evaluate_scores(
            y[masks["test"]],
            result.model.predict(features[masks["test"]]),
            threshold,
            test["customer_id"],
            test["timestamp"],
        )
        ap[model_type] = e.average_precision
        note = (
            f"{int(masks['train'].sum()):,} training rows, weighting "
            f"{result.params['class_weighting']}; test ROC-AUC {e.roc_auc:.3f}, "
            f"card precision@100 {e.card_precision_at_k:.3f}, recall@1%FPR {e.recall_at_fpr:.3f}"
        )
        figures.append(Figure(f"{model_type}: train time", seconds, "s", "", None, note))
        figures.append(
            Figure(f"{model_type}: test average precision", e.average_precision, "", "", None, "")
        )
    lead = ap["xgboost"] - ap["random_forest"]
    figures.append(
        Figure(
            "XGBoost AP minus RandomForest AP",
            lead,
            "",
            "> 0 (XGBoost beats the baseline)",
            lead > 0,
            "same windows, same features, each with its default configuration",
        )
    )
    return figures
