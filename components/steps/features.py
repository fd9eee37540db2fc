"""Pipeline step: point-in-time features of every accepted transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from components.features import FeatureSpec, compute_features
from components.steps.io import META_COLUMNS

__all__ = ["features_step"]


def features_step(
    data: str, label_delay_days: float, extra_columns: list[str], out_features: str, out_spec: str
) -> dict[str, Any]:
    """Compute the point-in-time features of every accepted row."""
    frame = pd.read_parquet(data)
    spec = FeatureSpec(label_delay_days=label_delay_days, extra_numeric=tuple(extra_columns))
    features = compute_features(frame, spec)
    out = pd.concat(
        [frame[META_COLUMNS].reset_index(drop=True), features.reset_index(drop=True)], axis=1
    )
    out.to_parquet(out_features, index=False)
    Path(out_spec).write_text(spec.to_json())
    return {"rows": len(out), "features": len(spec.feature_names())}
