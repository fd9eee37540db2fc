"""Pipeline step: split by time into training, validation and test windows."""

from __future__ import annotations

from typing import Any

import pandas as pd

from components.schema import LABEL
from components.split import TimeWindows, plan_windows, split_by_time
from components.steps.io import write_json

__all__ = ["split_step"]

_COUNT_KEYS = ("test_days", "valid_days", "train_days", "gap_days", "burn_in_days")


def split_step(
    features: str,
    windows: dict[str, Any],
    out_train: str,
    out_valid: str,
    out_test: str,
    out_windows: str,
) -> dict[str, Any]:
    """Split by time into training, validation and test windows.

    ``windows`` holds either the six explicit bounds (``train_start`` ... ``test_end``) or
    day counts (``test_days``, ``valid_days``, ``train_days``, ``gap_days``, ``burn_in_days``,
    ``end``).
    """
    frame = pd.read_parquet(features)
    bounds = [f"{w}_{e}" for w in ("train", "valid", "test") for e in ("start", "end")]
    explicit = {k: windows[k] for k in bounds if windows.get(k)}
    if explicit and len(explicit) < len(bounds):
        missing = [k for k in bounds if k not in explicit]
        raise ValueError(f"give all six window bounds or none; missing: {', '.join(missing)}")
    if explicit:
        plan = TimeWindows.from_dict(explicit)
    else:
        counts = {k: float(windows[k]) for k in _COUNT_KEYS if windows.get(k) is not None}
        if not counts.get("train_days"):
            counts["train_days"] = None  # 0 or missing: all the data after the burn-in
        plan = plan_windows(frame["timestamp"], **counts)
    masks = split_by_time(frame["timestamp"], plan)
    for name, path in (("train", out_train), ("valid", out_valid), ("test", out_test)):
        frame[masks[name]].to_parquet(path, index=False)
    summary = {
        "windows": plan.as_dict(),
        **{f"{n}_rows": int(m.sum()) for n, m in masks.items()},
        **{f"{n}_frauds": int(frame.loc[m, LABEL].sum()) for n, m in masks.items()},
    }
    write_json(out_windows, summary)
    return summary
