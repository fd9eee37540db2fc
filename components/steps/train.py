"""Pipeline step: train the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.features import FeatureSpec
from components.steps.io import write_json, xy
from components.training import TrainConfig, train_model

__all__ = ["train_step"]


def train_step(
    train: str, valid: str, spec_path: str, config: dict[str, Any], out_model: str, out_info: str
) -> dict[str, Any]:
    """Train a model on the training window (early stopping and search on validation)."""
    spec = FeatureSpec.from_json(Path(spec_path).read_text())
    _, X, y = xy(train, spec)
    _, Xv, yv = xy(valid, spec)
    result = train_model(X, y, Xv, yv, TrainConfig(**config))
    result.model.save(Path(out_model))
    info = {
        "model_type": result.model.model_type,
        "params": result.params,
        "valid_average_precision": result.valid_average_precision,
        "trials": result.trials,
        "train_seconds": round(result.train_seconds, 2),
        "train_rows": result.train_rows,
        "train_rows_after_resampling": result.train_rows_after_resampling,
        "config": config,
    }
    write_json(out_info, info)
    return info
