"""Write data frames to CSV or Parquet, chosen by the file's extension."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["default_home", "default_store_uri", "frame_sha256", "write_table"]


def default_home() -> Path:
    """The embedded-default working folder: ``$FRAUDOPS_HOME`` or ``./.fraudops``."""
    return Path(os.environ.get("FRAUDOPS_HOME", ".fraudops"))


def default_store_uri(option: str | None = None) -> str:
    """The store URI: ``option``, else ``$FRAUDOPS_STORE``, else ``$FRAUDOPS_HOME/store``."""
    return option or os.environ.get("FRAUDOPS_STORE") or str(default_home() / "store")


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


def frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of a data frame (independent of the file format it came from)."""
    import pandas as pd

    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()
