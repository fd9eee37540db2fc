"""Kubeflow Pipelines components: thin wrappers around :mod:`components.steps`.

No ``from __future__ import annotations`` here: KFP reads the real annotation objects.

Each component runs on the project image (see the Dockerfile), imports the package inside its
body and calls one step function. :func:`make_components` builds them for a given image, so the
image can be chosen when the pipeline is compiled.
"""

from types import SimpleNamespace

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

__all__ = ["DEFAULT_IMAGE", "make_components"]

DEFAULT_IMAGE = "ghcr.io/fraudops/fraudops:0.1.0"


def validate_op(
    data_uri: str,
    mapping: str,
    max_rejected_share: float,
    accepted: Output[Dataset],
    report: Output[Artifact],
    quarantine: Output[Dataset],
):
    """Validate the training data: schema, values, duplicates; quarantine bad rows.

    Args:
        data_uri: CSV or Parquet file: a path, or s3://bucket/key (S3_ENDPOINT etc. from env).
        mapping: Column mapping (built-in name or YAML path); empty for canonical columns.
        max_rejected_share: Fail when a larger share of rows is quarantined.
    """
    from components.steps.validate import validate_step

    validate_step(
        data_uri, mapping, max_rejected_share, accepted.path, report.path, quarantine.path
    )


def features_op(
    data: Input[Dataset],
    report: Input[Artifact],
    label_delay_days: float,
    features: Output[Dataset],
    spec: Output[Artifact],
):
    """Compute point-in-time features for every accepted transaction.

    Args:
        label_delay_days: Labels younger than this are unknown to the terminal features.
    """
    from components.steps.features import features_step
    from components.steps.io import read_json

    extra = read_json(report.path).get("extra_columns", [])
    features_step(data.path, label_delay_days, extra, features.path, spec.path)


def split_op(
    features: Input[Dataset],
    test_days: float,
    valid_days: float,
    train_days: float,
    gap_days: float,
    burn_in_days: float,
    train_start: str,
    train_end: str,
    valid_start: str,
    valid_end: str,
    test_start: str,
    test_end: str,
    train: Output[Dataset],
    valid: Output[Dataset],
    test: Output[Dataset],
    plan: Output[Artifact],
):
    """Split by time into training, validation and test windows separated by the label delay.

    Args:
        test_days: Test window, the last days of the data.
        valid_days: Validation window, before the test window and a gap.
        train_days: Training window (0: everything after the burn-in).
        gap_days: Gap between windows (the label delay).
        burn_in_days: Days at the start left out (windowed features lack history).
        train_start: Explicit bounds instead of day counts: all six ISO dates, or none.
    """
    from components.steps.split import split_step

    windows = {
        "test_days": test_days,
        "valid_days": valid_days,
        "train_days": train_days,
        "gap_days": gap_days,
        "burn_in_days": burn_in_days,
        "train_start": train_start,
        "train_end": train_end,
        "valid_start": valid_start,
        "valid_end": valid_end,
        "test_start": test_start,
        "test_end": test_end,
    }
    split_step(features.path, windows, train.path, valid.path, test.path, plan.path)


def train_op(
    train: Input[Dataset],
    valid: Input[Dataset],
    spec: Input[Artifact],
    model_type: str,
    model_params: dict,
    class_weighting: str,
    resampling: str,
    search_budget_seconds: float,
    seed: int,
    model: Output[Model],
    info: Output[Artifact],
):
    """Train the model (XGBoost by default) with early stopping on the validation window.

    Args:
        model_type: xgboost, random_forest or logistic_regression.
        model_params: Hyperparameter overrides.
        class_weighting: auto, balanced, sqrt or none.
        resampling: none or smote.
        search_budget_seconds: Random search on the validation window (0: off).
        seed: Random seed.
    """
    from components.steps.train import train_step

    config = {
        "model_type": model_type,
        "params": model_params,
        "class_weighting": class_weighting,
        "resampling": resampling,
        "search_budget_seconds": search_budget_seconds,
        "seed": seed,
    }
    result = train_step(train.path, valid.path, spec.path, config, model.path, info.path)
    model.metadata["model_type"] = result["model_type"]
    model.metadata["valid_average_precision"] = result["valid_average_precision"]


def evaluate_op(
    model: Input[Model],
    valid: Input[Dataset],
    test: Input[Dataset],
    spec: Input[Artifact],
    threshold_policy: str,
    k: int,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Artifact],
    threshold: Output[Artifact],
    plots: Output[Artifact],
    scores: Output[Dataset],
):
    """Choose the threshold on validation by the policy; evaluate on test; draw plots.

    Args:
        threshold_policy: alert_budget:<alerts a day> or target_precision:<0..1>.
        k: Cards checked a day, for card precision@k.
    """
    from components.steps.evaluate import evaluate_step

    result = evaluate_step(
        model.path,
        valid.path,
        test.path,
        spec.path,
        threshold_policy,
        k,
        report.path,
        threshold.path,
        plots.path,
        scores.path,
    )
    test_metrics = result["test"]
    for name in (
        "average_precision",
        "roc_auc",
        "card_precision_at_k",
        "recall_at_fpr",
        "precision",
        "recall",
        "f1",
        "alerts_per_day",
        "threshold",
    ):
        metrics.log_metric(f"test_{name}", float(test_metrics[name]))
    classification.log_confusion_matrix(
        ["genuine", "fraud"],
        [[test_metrics["tn"], test_metrics["fp"]], [test_metrics["fn"], test_metrics["tp"]]],
    )
    roc = result["roc"]
    classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])


def gate_op(
    report: Input[Artifact],
    data: Input[Dataset],
    plan: Input[Artifact],
    store_uri: str,
    model_name: str,
    tolerance: float,
    decision: Output[Artifact],
) -> bool:
    """Compare the challenger with the champion on the same test window.

    Args:
        tolerance: How much worse (average precision) the challenger may be and still pass.

    Returns:
        Whether the challenger may be registered.
    """
    from components.steps.gate import gate_step

    result = gate_step(
        report.path, data.path, plan.path, store_uri, model_name, tolerance, decision.path
    )
    return bool(result["passed"])


def register_op(
    model: Input[Model],
    spec: Input[Artifact],
    report: Input[Artifact],
    threshold: Input[Artifact],
    plots: Input[Artifact],
    data: Input[Dataset],
    features: Input[Dataset],
    plan: Input[Artifact],
    decision: Input[Artifact],
    info: Input[Artifact],
    validation: Input[Artifact],
    store_uri: str,
    model_name: str,
) -> str:
    """Write the immutable, checksummed model bundle to the store and set its alias.

    Returns:
        The registered version (v1, v2, ...).
    """
    from components.steps.register import register_step

    result = register_step(
        model.path,
        spec.path,
        report.path,
        threshold.path,
        plots.path,
        data.path,
        features.path,
        plan.path,
        decision.path,
        info.path,
        validation.path,
        store_uri,
        model_name,
    )
    return result["version"]


def make_components(image: str = DEFAULT_IMAGE) -> SimpleNamespace:
    """Build the pipeline's components for a base image (the project image)."""

    def component(func):
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return SimpleNamespace(
        validate=component(validate_op),
        features=component(features_op),
        split=component(split_op),
        train=component(train_op),
        evaluate=component(evaluate_op),
        gate=component(gate_op),
        register=component(register_op),
    )
