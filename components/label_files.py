"""Ingested label files in the store: written by label feedback, read by it and by serving.

``fraudops labels ingest`` keeps each label file it ingests as one immutable Parquet object::

    labels/<model>/<YYYY-MM-DD>/<HHMMSSffffff>-<id>.parquet

(the date and time of the ingestion, UTC) with the columns of :data:`COLUMNS`. ``terminal_id``
and ``timestamp`` say where and when the labelled transaction happened: from the label file
itself, or from the logged prediction it was joined to. The model servers need them to put a
fraud label on the right row of their online state (terminal fraud rates); labels without them
still count for realised performance. Files written before those columns existed lack them.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

import pandas as pd

from components.store import ObjectStore

__all__ = ["COLUMNS", "PREFIX", "label_file_key", "label_file_keys", "read_label_file"]

PREFIX = "labels"
COLUMNS = ("transaction_id", "is_fraud", "label_time", "terminal_id", "timestamp")
"""``is_fraud`` is 0 or 1; ``label_time``, ``timestamp`` are UTC times (NaT when unknown)."""


def label_file_key(model: str, now: datetime | None = None) -> str:
    """A new, unique key for a label file of ``model`` ingested at ``now``."""
    now = now or datetime.now(UTC)
    return f"{PREFIX}/{model}/{now:%Y-%m-%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"


def label_file_keys(
    store: ObjectStore,
    model: str,
    days: list[str] | None = None,
    since: datetime | None = None,
) -> list[str]:
    """Keys of ``model``'s label files, oldest ingestion first (a later label wins).

    Args:
        store: The store.
        model: The model's name.
        days: Only these ingestion days (``YYYY-MM-DD``), one listing each; all when None.
        since: Only files ingested from this day on.
    """
    root = f"{PREFIX}/{model}/"
    if days is None:
        keys = store.list(root)
    else:
        keys = [key for day in days for key in store.list(f"{root}{day}/")]
    first = f"{root}{since:%Y-%m-%d}/" if since is not None else ""
    return sorted(key for key in keys if key.endswith(".parquet") and key >= first)


def read_label_file(data: bytes) -> pd.DataFrame:
    """A stored label file with every column of :data:`COLUMNS`: ids as text, ``is_fraud``
    as a number (NaN where it is not one), times in UTC. A file written before labels carried
    their transaction's terminal and time gives them as unknown.

    Raises:
        ValueError: not Parquet (pyarrow's errors are ValueErrors or OSErrors), or without
            ``transaction_id`` or ``is_fraud``: not a label file.
    """
    frame = pd.read_parquet(io.BytesIO(data))
    missing = [c for c in ("transaction_id", "is_fraud") if c not in frame]
    if missing:
        raise ValueError(f"no column {', '.join(missing)}; columns are {list(frame.columns)}")

    def times(name: str) -> pd.Series:
        column = frame.get(name, pd.Series(None, frame.index, dtype=object))
        return pd.to_datetime(column, utc=True, format="ISO8601", errors="coerce")

    return pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"].astype(str),
            "is_fraud": pd.to_numeric(frame["is_fraud"], errors="coerce"),
            "label_time": times("label_time"),
            "terminal_id": frame.get("terminal_id", pd.Series(None, frame.index, dtype=object)),
            "timestamp": times("timestamp"),
        }
    )
