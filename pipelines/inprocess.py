"""The training pipeline's steps one after the other in this process, without kfp.

The step functions the pipeline's components wrap (``components/steps``), wired as in
:mod:`pipelines.training`: for tests and benchmarks that need a registered bundle in seconds
(``kfp.local``, see :mod:`pipelines.local`, starts a process per step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["OUTPUT_FILES", "run_steps_in_process"]

OUTPUT_FILES = (
    "accepted.parquet",
    "report.json",
    "quarantine.csv",
    "features.parquet",
    "spec.json",
    "train.parquet",
    "valid.parquet",
    "test.parquet",
    "windows.json",
    "model",
    "info.json",
    "metrics.json",
    "threshold.json",
    "plots",
    "scores.parquet",
    "gate.json",
)
"""What the steps write into the folder (``model`` and ``plots`` are folders)."""

DEFAULT_WINDOWS = {"test_days": 7, "valid_days": 7, "gap_days": 7, "burn_in_days": 7}


def run_steps_in_process(
    folder: Path,
    data: str | Path,
    store: str,
    model_name: str = "fraud-detector",
    *,
    windows: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    threshold_policy: str = "alert_budget:100",
    card_precision_k: int = 100,
    gate_tolerance: float = 0.005,
) -> dict[str, Any]:
    """Validate, compute features, split, train, evaluate, gate and register.

    Args:
        folder: Where the steps write their outputs (:data:`OUTPUT_FILES`); must not hold
            ``data`` under one of those names.
        data: Training transactions with labels (canonical columns).
        store: Store URI to register into.
        model_name: Registry name.
        windows: Split windows (``split_step``); default 7 days each of test, validation,
            gap and burn-in.
        train: ``TrainConfig`` fields (``seed``, ``model_type``, ``params``, ...).
        threshold_policy: Decision threshold policy of the evaluation step.
        card_precision_k: ``k`` of card precision@k.
        gate_tolerance: Allowed average-precision loss against the champion.

    Returns:
        The path of every output by file name, plus what the register step returned
        (``version``, ``alias``, ...).
    """
    from components.steps.evaluate import evaluate_step
    from components.steps.features import features_step
    from components.steps.gate import gate_step
    from components.steps.register import register_step
    from components.steps.split import split_step
    from components.steps.train import train_step
    from components.steps.validate import validate_step

    folder.mkdir(parents=True, exist_ok=True)
    p = {name: str(folder / name) for name in OUTPUT_FILES}
    if str(Path(data).resolve()) in {str(Path(v).resolve()) for v in p.values()}:
        raise ValueError(f"{data} would be overwritten by a step's output; move it")
    validate_step(str(data), "", 0.05, p["accepted.parquet"], p["report.json"], p["quarantine.csv"])
    features_step(p["accepted.parquet"], 7.0, [], p["features.parquet"], p["spec.json"])
    split_step(
        p["features.parquet"],
        DEFAULT_WINDOWS if windows is None else windows,
        p["train.parquet"],
        p["valid.parquet"],
        p["test.parquet"],
        p["windows.json"],
    )
    train_step(
        p["train.parquet"],
        p["valid.parquet"],
        p["spec.json"],
        train or {},
        p["model"],
        p["info.json"],
    )
    evaluate_step(
        p["model"],
        p["valid.parquet"],
        p["test.parquet"],
        p["spec.json"],
        threshold_policy,
        card_precision_k,
        p["metrics.json"],
        p["threshold.json"],
        p["plots"],
        p["scores.parquet"],
    )
    gate_step(
        p["metrics.json"],
        p["accepted.parquet"],
        p["windows.json"],
        store,
        model_name,
        gate_tolerance,
        p["gate.json"],
    )
    result = register_step(
        p["model"],
        p["spec.json"],
        p["metrics.json"],
        p["threshold.json"],
        p["plots"],
        p["accepted.parquet"],
        p["features.parquet"],
        p["windows.json"],
        p["gate.json"],
        p["info.json"],
        p["report.json"],
        store,
        model_name,
    )
    return {**p, **result}
