"""Late labels: join confirmed fraud and chargebacks to logged predictions; realised performance.

Labels arrive days or weeks after scoring. Each ingested file is kept (``labels/<model>/...``,
see :mod:`components.label_files`), joined by ``transaction_id`` to the inference log, and
turned into a per-day table of realised precision, recall and average precision. A day below
the configured floor is a performance event: it is recorded, alerted on, and counts as a
reason to retrain. The stored labels also carry each transaction's terminal and time (from the
file, or else from the logged prediction), so the model servers can put them in their online
state: terminal fraud rates then count the frauds reported since the bundle was trained.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from components.inference_log import read_frame
from components.label_files import PREFIX, label_file_key, label_file_keys, read_label_file
from components.store import ObjectStore

__all__ = ["LabelIngest", "PerformanceFloor", "daily_performance", "ingest_labels", "load_labels"]

LABEL_PREFIX = PREFIX

log = logging.getLogger(__name__)


class LabelFileError(ValueError):
    """The label file lacks a required column or has unusable values."""

    user_error = True  # the message says what to fix: no traceback (cli_errors)


@dataclass(frozen=True)
class PerformanceFloor:
    """The least realised performance a day may show before it is an event.

    Attributes:
        min_precision: Precision of the alerts (share of alerts that were fraud).
        min_recall: Share of the fraud that was alerted on.
        min_average_precision: Ranking quality.
        min_frauds: Days with fewer labelled frauds are shown but not judged.
    """

    min_precision: float = 0.0
    min_recall: float = 0.5
    min_average_precision: float = 0.3
    min_frauds: int = 5


@dataclass
class LabelIngest:
    """Outcome of one ingestion.

    ``placed`` counts the labels whose terminal and time are known (from the file or the
    matched prediction): those the model servers can put in their online state.
    """

    labels_in: int
    matched: int
    unmatched: int
    duplicates: int
    placed: int
    daily: pd.DataFrame
    breaches: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)


def normalise_labels(frame: pd.DataFrame, source: str = "labels") -> tuple[pd.DataFrame, int]:
    """Check and clean a label file: ``transaction_id`` and ``is_fraud`` (or ``chargeback``).

    Optional: ``label_time`` (when the label became known; default now), and ``terminal_id``
    and ``timestamp`` of the transaction (a chargeback feed usually has them; otherwise they
    come from the logged prediction).

    Returns:
        The labels (one row per transaction, the latest wins) and how many duplicates were
        collapsed.

    Raises:
        LabelFileError: a required column is missing or a label is not 0/1.
    """
    if "transaction_id" not in frame:
        raise LabelFileError(
            f"{source}: no transaction_id column; columns are {list(frame.columns)}"
        )
    label_column = next((c for c in ("is_fraud", "chargeback", "label") if c in frame), None)
    if label_column is None:
        raise LabelFileError(
            f"{source}: no label column; name it is_fraud (1 fraud, 0 genuine) or chargeback"
        )
    labels = pd.to_numeric(frame[label_column], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 1)[:5].tolist()
        raise LabelFileError(
            f"{source}: {int(bad.sum())} label(s) in {label_column!r} are not 0 or 1 "
            f"(data rows {rows}); fix them or drop those rows"
        )
    timestamps = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    if "timestamp" in frame:
        timestamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
        bad = timestamps.isna() & frame["timestamp"].notna()
        if bad.any():
            rows = (np.flatnonzero(bad.to_numpy()) + 1)[:5].tolist()
            raise LabelFileError(
                f"{source}: {int(bad.sum())} timestamp(s) cannot be read (data rows {rows}); "
                "write them in ISO 8601, e.g. 2026-05-16T10:00:00Z, or leave them empty"
            )
    terminals = frame["terminal_id"] if "terminal_id" in frame else pd.Series(None, frame.index)
    out = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"].astype(str),
            "is_fraud": labels.astype(np.int8),
            "label_time": pd.to_datetime(frame["label_time"], utc=True, errors="coerce")
            if "label_time" in frame
            else pd.Timestamp.now(tz="UTC"),
            "terminal_id": terminals.where(terminals.isna(), terminals.astype(str)).astype(object),
            "timestamp": timestamps.astype("datetime64[ns, UTC]"),
        }
    )
    deduplicated = out.drop_duplicates("transaction_id", keep="last")
    return deduplicated.reset_index(drop=True), len(out) - len(deduplicated)


def place_labels(labels: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Each label's ``terminal_id`` and ``timestamp``: those of its logged prediction, else the
    file's own.

    The logged ones win: they are exactly what the servers put in their online state, while a
    label feed often gives the transaction's time to the second or only its date.

    Args:
        labels: From :func:`normalise_labels`.
        predictions: Inference-log frame with ``tx.transaction_id``, ``tx.terminal_id`` and
            ``tx.timestamp`` (a transaction scored by two versions: the first record).
    """
    needed = ("tx.transaction_id", "tx.terminal_id", "tx.timestamp")
    if predictions.empty or any(c not in predictions for c in needed):
        return labels
    logged = predictions[list(needed)].drop_duplicates("tx.transaction_id")
    logged = logged.set_index(logged["tx.transaction_id"].astype(str))
    stamps = logged["tx.timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(stamps):  # text Arrow could not cast
        stamps = pd.to_datetime(stamps.astype(str), utc=True, errors="coerce", format="ISO8601")
    ids = labels["transaction_id"]
    terminals = ids.map(logged["tx.terminal_id"].astype(object))
    out = labels.copy()
    out["terminal_id"] = terminals.where(terminals.notna(), out["terminal_id"])
    out["terminal_id"] = out["terminal_id"].map(lambda t: None if pd.isna(t) else str(t))
    logged_at = ids.map(stamps).astype("datetime64[ns, UTC]")
    out["timestamp"] = logged_at.fillna(out["timestamp"]).astype("datetime64[ns, UTC]")
    return out


def load_labels(store: ObjectStore, model: str) -> pd.DataFrame:
    """Every label ingested so far for ``model`` (latest per transaction).

    A file under ``labels/<model>/`` that is not a label file (see :func:`read_label_file`)
    is left out with a warning: it must not stop every later ingestion.
    """
    parts = []
    for key in label_file_keys(store, model):
        data = store.get_bytes(key)
        try:
            parts.append(read_label_file(data))
        except (ValueError, OSError) as e:  # pyarrow's errors are ValueErrors or OSErrors
            log.warning("%s is not a label file (%s); left out", key, e)
    if not parts:
        return pd.DataFrame(columns=["transaction_id", "is_fraud", "label_time"])
    return pd.concat(parts, ignore_index=True).drop_duplicates("transaction_id", keep="last")


def daily_performance(
    predictions: pd.DataFrame, labels: pd.DataFrame, assume_genuine: bool = True
) -> pd.DataFrame:
    """Realised precision, recall and average precision per scoring day.

    Args:
        predictions: Inference-log frame (``time``, ``tx.transaction_id``, ``score``,
            ``decision``, ``version``).
        labels: ``transaction_id``, ``is_fraud``.
        assume_genuine: Treat predictions without a label as genuine (a chargeback feed lists
            only fraud); otherwise leave them out.
    """
    joined = predictions.merge(
        labels[["transaction_id", "is_fraud"]],
        left_on="tx.transaction_id",
        right_on="transaction_id",
        how="left",
    )
    if assume_genuine:
        joined["is_fraud"] = joined["is_fraud"].fillna(0)
    joined = joined[joined["is_fraud"].notna()]
    joined["day"] = joined["time"].dt.strftime("%Y-%m-%d")
    rows = []
    for (day, version), group in joined.groupby(["day", "version"], sort=True, observed=True):
        y = group["is_fraud"].to_numpy(dtype=int)
        alert = (group["decision"] == "alert").to_numpy()
        tp = int((alert & (y == 1)).sum())
        rows.append(
            {
                "day": day,
                "version": version,
                "transactions": len(group),
                "frauds": int(y.sum()),
                "alerts": int(alert.sum()),
                "precision": tp / alert.sum() if alert.sum() else np.nan,
                "recall": tp / y.sum() if y.sum() else np.nan,
                "average_precision": float(average_precision_score(y, group["score"]))
                if 0 < y.sum() < len(y)
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


def breaches(daily: pd.DataFrame, floor: PerformanceFloor) -> list[dict[str, Any]]:
    """Days (with enough labelled fraud) whose realised performance is below the floor."""
    found = []
    for row in daily.to_dict("records"):
        if row["frauds"] < floor.min_frauds:
            continue
        below = {
            metric: row[metric]
            for metric, minimum in (
                ("precision", floor.min_precision),
                ("recall", floor.min_recall),
                ("average_precision", floor.min_average_precision),
            )
            if not pd.isna(row[metric]) and row[metric] < minimum
        }
        if below:
            found.append({"day": row["day"], "version": row["version"], "below_floor": below})
    return found


def ingest_labels(
    store: ObjectStore,
    model: str,
    frame: pd.DataFrame,
    floor: PerformanceFloor | None = None,
    assume_genuine: bool = True,
    source: str = "labels",
) -> LabelIngest:
    """Store a label file, join it to the predictions and compute realised performance.

    Nothing is dropped silently: labels that match no logged prediction are counted
    (``unmatched``) and kept, since the prediction may be logged under another model.
    """
    floor = floor or PerformanceFloor()
    labels, duplicates = normalise_labels(frame, source)
    predictions = read_frame(
        store,
        model,
        columns=[
            "tx.transaction_id", "tx.terminal_id", "tx.timestamp", "score", "decision", "version"
        ],
    )  # fmt: skip
    labels = place_labels(labels, predictions)
    buffer = io.BytesIO()
    labels.to_parquet(buffer, index=False)
    key = label_file_key(model)
    store.put_bytes(key, buffer.getvalue())
    all_labels = load_labels(store, model)
    matched = int(labels["transaction_id"].isin(predictions.get("tx.transaction_id", [])).sum())
    daily = (
        daily_performance(predictions, all_labels, assume_genuine)
        if len(predictions)
        else pd.DataFrame()
    )
    buffer = io.BytesIO()
    daily.to_parquet(buffer, index=False)
    table_key = f"performance/{model}/daily.parquet"
    store.put_bytes(table_key, buffer.getvalue())
    return LabelIngest(
        labels_in=len(labels) + duplicates,
        matched=matched,
        unmatched=len(labels) - matched,
        duplicates=duplicates,
        placed=int((labels["terminal_id"].notna() & labels["timestamp"].notna()).sum()),
        daily=daily,
        breaches=breaches(daily, floor) if len(daily) else [],
        keys={"labels": key, "daily": table_key},
    )
