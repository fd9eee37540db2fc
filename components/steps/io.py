"""Small helpers shared by the steps: JSON files and input locations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.features.spec import FeatureSpec
from components.schema import LABEL

__all__ = ["META_COLUMNS", "days_covered", "fetch_input", "read_json", "write_json", "xy"]

META_COLUMNS = ["transaction_id", "timestamp", "customer_id", "terminal_id", LABEL]


def write_json(path: Path | str, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def fetch_input(uri: str, folder: Path) -> Path:
    """A local path for ``uri``: a local file as it is, an ``s3://bucket/key`` downloaded."""
    if not uri.startswith("s3://"):
        return Path(uri.removeprefix("file://"))
    from components.store import open_store
    from components.store.uri import parse_s3_uri

    bucket, key = parse_s3_uri(uri)
    local = folder / Path(key).name
    open_store(f"s3://{bucket}").get_file(key, local)
    return local


def xy(path: str, spec: FeatureSpec) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Rows, feature matrix and labels of a features file."""
    frame = pd.read_parquet(path)
    return frame, frame[spec.feature_names()], frame[LABEL].to_numpy()


def days_covered(ts: pd.Series) -> float:
    """Days between the first and last timestamp (at least 1)."""
    return max((ts.max() - ts.min()) / pd.Timedelta(days=1), 1.0)
