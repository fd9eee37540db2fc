"""Write data frames to CSV or Parquet, chosen by the file's extension."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

__all__ = ["default_home", "write_table"]


def default_home() -> Path:
    """The embedded-default working folder: ``$FRAUDOPS_HOME`` or ``./.fraudops``."""
    return Path(os.environ.get("FRAUDOPS_HOME", ".fraudops"))


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as Parquet (``.parquet``/``.pq``) or CSV (anything else), atomically.

    The file is written next to its destination and renamed into place, so a reader never sees
    half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
