"""Drift of live traffic against the training data: a fast statistic and an Evidently report.

The whole window is judged with the population stability index (PSI) of each monitored column
against the bundle's precomputed reference profile (quantile bins), which takes one pass over
the data. An Evidently ``DataDriftPreset`` report on a capped random sample gives engineers the
HTML to open. A policy turns the numbers into a decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.bundle import Bundle
from components.features import compute_features
from components.inference_log import FEATURE, TX
from components.profile import population_stability_index

__all__ = [
    "DEFAULT_MONITORED",
    "DriftDecision",
    "DriftPolicy",
    "current_frame",
    "decide",
    "evidently_report",
    "fast_drift",
    "log_columns",
]

# Raw fields and the engineered features whose reference distribution does not depend on how
# much history the training window had (windowed counts and sums do, so they are not judged).
DEFAULT_MONITORED = (
    "amount",
    "transaction_type",
    "channel",
    "merchant_category",
    "account_type",
    "account_balance",
    "log_amount",
    "hour",
    "is_night",
    "amount_to_balance",
    "amount_vs_customer_mean",
)
CATEGORICAL = ("transaction_type", "channel", "merchant_category", "account_type")


@dataclass(frozen=True)
class DriftPolicy:
    """When a window counts as drifted, and when drift may trigger retraining.

    Attributes:
        psi_threshold: A column drifted when its PSI is at least this (the usual reading:
            below 0.1 no shift, 0.1-0.25 moderate, above 0.25 major; a 35% rise of typical
            amounts gives about 0.17).
        max_drifted_share: The window drifted when at least this share of the monitored
            columns drifted ...
        score_psi_threshold: ... or when the score distribution's PSI is at least this.
        min_rows: Windows with fewer rows are not judged (too little evidence).
        cooldown_hours: No new retraining within this time of the last one.
        sample_rows: Rows of the Evidently report's random sample (at most).
        monitored: Columns to judge.
    """

    psi_threshold: float = 0.1
    max_drifted_share: float = 0.25
    score_psi_threshold: float = 0.2
    min_rows: int = 1_000
    cooldown_hours: float = 24.0
    sample_rows: int = 100_000
    monitored: tuple[str, ...] = DEFAULT_MONITORED


@dataclass
class DriftDecision:
    """The verdict on a window and the numbers behind it."""

    drifted: bool
    judged: bool
    rows: int
    drifted_columns: dict[str, float]
    column_psi: dict[str, float]
    score_psi: float | None
    drifted_share: float
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def parse_utc(values: pd.Series) -> pd.Series:
    """ISO-8601 text to UTC timestamps: Arrow's parser (fast), pandas' for anything else."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    try:
        parsed = pc.cast(pa.array(values, type=pa.string()), pa.timestamp("us", tz="UTC"))
        return pd.Series(parsed.to_pandas(), index=values.index)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.to_datetime(values, utc=True, format="ISO8601", cache=False)


def log_columns(monitored: tuple[str, ...] | list[str]) -> list[str]:
    """Inference-log columns the drift job needs: transaction fields, score, monitored features."""
    from components.schema import FIELDS

    fields = [f.name for f in FIELDS if f.name != "transaction_id"]  # ids are not needed
    return ["score", *(TX + f for f in fields), *(FEATURE + c for c in monitored)]


def current_frame(
    log: pd.DataFrame, bundle: Bundle, needed: tuple[str, ...] | list[str] | None = None
) -> pd.DataFrame:
    """Turn an inference-log frame into columns comparable with the bundle's reference.

    Transaction fields come from ``tx.*``; engineered features from ``feature.*`` when the
    server logged them, otherwise they are computed with the bundle's spec, the bundle's online
    snapshot as earlier history, in time order. With ``needed``, only what those columns
    require is computed (e.g. no terminal windows), which gives the same values faster.
    """
    tx = {c[len(TX) :]: log[c] for c in log.columns if c.startswith(TX)}
    frame = pd.DataFrame(tx)
    if "timestamp" in frame:
        frame["timestamp"] = parse_utc(frame["timestamp"])
    spec = bundle.spec()
    logged = [c for c in log.columns if c.startswith(FEATURE)]
    if logged:
        features = pd.DataFrame({c[len(FEATURE) :]: log[c] for c in logged})
    else:
        reduced = replace(
            spec,
            customer_windows_days=(max(spec.customer_windows_days),),
            terminal_windows_days=(),
        )
        if needed is not None and set(needed) & set(spec.feature_names()) <= set(
            reduced.feature_names()
        ):
            spec = reduced
        snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
        features = compute_features(frame, spec, history=snapshot)
    out = pd.concat([frame, features.drop(columns=[c for c in features if c in frame])], axis=1)
    out["score"] = log["score"].to_numpy()
    return out


def fast_drift(
    profile: dict[str, Any], current: pd.DataFrame, columns: list[str]
) -> dict[str, float]:
    """PSI of each column of ``current`` against the reference profile (whole window)."""
    return {
        c: round(population_stability_index(profile["columns"][c], current[c]), 6)
        for c in columns
        if c in profile["columns"] and c in current
    }


def decide(
    column_psi: dict[str, float], score_psi: float | None, rows: int, policy: DriftPolicy
) -> DriftDecision:
    """Apply the policy to the window's numbers."""
    drifted = {c: v for c, v in column_psi.items() if v >= policy.psi_threshold}
    share = len(drifted) / len(column_psi) if column_psi else 0.0
    reasons = []
    judged = rows >= policy.min_rows
    if not judged:
        reasons.append(f"only {rows} rows in the window (minimum {policy.min_rows}): not judged")
    if judged and share >= policy.max_drifted_share:
        worst = ", ".join(sorted(drifted, key=drifted.get, reverse=True))
        reasons.append(
            f"{len(drifted)} of {len(column_psi)} columns drifted ({share:.0%} >= "
            f"{policy.max_drifted_share:.0%}): {worst}"
        )
    if judged and score_psi is not None and score_psi >= policy.score_psi_threshold:
        reasons.append(
            f"score distribution shifted (PSI {score_psi:.3f} >= {policy.score_psi_threshold})"
        )
    is_drift = judged and (
        share >= policy.max_drifted_share or (score_psi or 0) >= policy.score_psi_threshold
    )
    if judged and not is_drift:
        reasons.append(
            f"{len(drifted)} of {len(column_psi)} columns drifted ({share:.0%} < "
            f"{policy.max_drifted_share:.0%}) and score PSI {score_psi or 0:.3f} < "
            f"{policy.score_psi_threshold}: no drift"
        )
    return DriftDecision(
        is_drift, judged, rows, drifted, column_psi, score_psi, round(share, 4), reasons
    )


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    html_path: Path,
    sample_rows: int,
    seed: int = 0,
    drift_share: float = 0.25,
) -> dict[str, Any]:
    """Run an Evidently ``DataDriftPreset`` report (plus score drift) on a capped sample.

    ``drift_share`` is the policy's share of drifted columns, so that the report's headline
    ("Dataset Drift is detected") agrees with the job's decision (Evidently's default is 0.5).

    Returns:
        Per column: Evidently's drift value, method and threshold; the drifted count and share;
        the sample size. The HTML report is written to ``html_path``.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    sample = current.sample(n=min(sample_rows, len(current)), random_state=seed)
    columns = [c for c in columns if c in reference and c in sample]
    categorical = [c for c in columns if c in CATEGORICAL]
    numerical = [c for c in columns if c not in CATEGORICAL]
    definition = DataDefinition(
        numerical_columns=[*numerical, "score"], categorical_columns=categorical
    )

    def dataset(frame: pd.DataFrame):
        data = frame[[*columns, "score"]].copy()
        for c in categorical:
            data[c] = data[c].astype(str)
        for c in numerical:
            data[c] = pd.to_numeric(data[c], errors="coerce").astype("float64")
        return Dataset.from_pandas(data, data_definition=definition)

    report = Report(
        [DataDriftPreset(columns=columns, drift_share=drift_share), ValueDrift(column="score")]
    )
    snapshot = report.run(current_data=dataset(sample), reference_data=dataset(reference))
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))  # str: save_html(Path) writes nothing in evidently 0.7
    result: dict[str, Any] = {"sample_rows": len(sample), "columns": {}}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        kind = config.get("type", "")
        if kind.endswith("ValueDrift"):
            result["columns"][config["column"]] = {
                "value": float(metric["value"]),
                "method": config.get("method"),
                "threshold": config.get("threshold"),
            }
        elif kind.endswith("DriftedColumnsCount"):
            result["drifted_count"] = float(metric["value"]["count"])
            result["drifted_share"] = float(metric["value"]["share"])
    return result


def numeric_summary(frame: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Means of numeric columns, for the printed summary."""
    return {
        c: float(np.nanmean(pd.to_numeric(frame[c], errors="coerce")))
        for c in columns
        if c in frame and c not in CATEGORICAL
    }
