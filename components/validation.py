"""Validate transactions: parse types, check values with pandera, quarantine bad rows.

Nothing is dropped silently: every row that goes in is either accepted or quarantined with the
reason(s), and the report's counts add up (``rows_in == accepted + quarantined``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from components.loaders import ROW_NUMBER
from components.schema import FIELDS, LABEL, MAX_MAGNITUDE, REQUIRED_FIELDS

__all__ = [
    "RejectedShareError",
    "ValidationConfig",
    "ValidationResult",
    "build_schema",
    "check_rejected_share",
    "parse_types",
    "validate_transactions",
]

REASONS = "reasons"


class RejectedShareError(ValueError):
    """More rows were quarantined than the configured limit allows."""


@dataclass(frozen=True)
class ValidationConfig:
    """What validation requires.

    Attributes:
        max_rejected_share: Largest share of quarantined rows (0..1) before validation fails.
        require_label: Require ``is_fraud`` on every row (training, evaluation).
        now: Reference time for "in the future" (default: the current UTC time).
        clock_skew: Tolerance for timestamps slightly ahead of ``now``.
    """

    max_rejected_share: float = 0.05
    require_label: bool = False
    now: datetime | None = None
    clock_skew: timedelta = timedelta(minutes=5)


@dataclass
class ValidationResult:
    """Outcome of validation.

    Attributes:
        accepted: Rows that passed, with canonical types (``source_row`` dropped).
        quarantined: Rows that failed, with their values as read, ``source_row`` and
            ``reasons`` (every problem of the row, ``; ``-separated).
        report: Counts and reasons, JSON-serialisable.
    """

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the quarantined share is within the limit."""
        return bool(self.report.get("passed"))


def _failures(index: pd.Index, column: str, check: str, values: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": index,
            "column": column,
            "check": check,
            "value": values.astype(str).str.slice(0, 80).to_numpy(),
        }
    )


def parse_types(frame: pd.DataFrame, extra_numeric: list[str] | None = None):
    """Convert canonical columns (and numeric extras) to their types.

    Values that cannot be converted become missing and are reported, with the original value.

    Args:
        frame: Canonical layout as loaded (text or typed).
        extra_numeric: Extra feature columns that must be numbers.

    Returns:
        ``(typed frame, failures)`` where failures has ``index, column, check, value``.
    """
    typed = pd.DataFrame(index=frame.index)
    problems: list[pd.DataFrame] = []
    kinds = {f.name: f.kind for f in FIELDS}
    kinds.update({c: "float" for c in extra_numeric or []})
    for name, kind in kinds.items():
        if name not in frame.columns:
            continue
        raw = frame[name]
        present = raw.notna()
        if kind in ("string", "category"):
            text = raw.astype(object).where(present)
            text = text.where(~present, text.astype(str).str.strip())
            text = text.where(text != "")
            typed[name] = text.str.lower().astype("category") if kind == "category" else text
            continue
        if kind == "timestamp":
            if pd.api.types.is_datetime64_any_dtype(raw):
                parsed = (
                    raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
                )
            else:
                parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
            bad = present & parsed.isna()
            check = "not a date-time (expected ISO 8601, e.g. 2026-04-01T12:30:00Z)"
        else:
            parsed = pd.to_numeric(raw, errors="coerce").astype("float64")
            bad = present & parsed.isna()
            check = "not a number"
            infinite = np.isinf(parsed)
            if infinite.any():
                problems.append(_failures(frame.index[infinite], name, "not finite", raw[infinite]))
            huge = ~infinite & (parsed.abs() > MAX_MAGNITUDE)
            if huge.any():
                check_huge = f"beyond ±{MAX_MAGNITUDE:g} (overflows the model's features)"
                problems.append(_failures(frame.index[huge], name, check_huge, raw[huge]))
            parsed = parsed.where(~(infinite | huge))
        if bad.any():
            problems.append(_failures(frame.index[bad], name, check, raw[bad]))
        typed[name] = parsed
    failures = pd.concat(problems) if problems else _failures(pd.Index([]), "", "", pd.Series([]))
    return typed, failures


def build_schema(config: ValidationConfig, columns: list[str]) -> pa.DataFrameSchema:
    """The pandera schema of canonical transactions, for the columns present."""
    now = pd.Timestamp(config.now or datetime.now(UTC))
    if now.tzinfo is None:
        now = now.tz_localize("UTC")
    latest = now + pd.Timedelta(config.clock_skew)
    checks: dict[str, list[pa.Check]] = {
        "amount": [pa.Check.ge(0, error="negative amount")],
        "account_age_days": [pa.Check.ge(0, error="negative account age")],
        "timestamp": [pa.Check.le(latest, error=f"in the future (after {latest:%Y-%m-%dT%H:%M}Z)")],
        LABEL: [pa.Check.isin([0, 1], error="label must be 0 or 1")],
    }
    for f in FIELDS:
        if f.allowed:
            checks[f.name] = [pa.Check.isin(list(f.allowed), error=f"not one of {list(f.allowed)}")]
    required = set(REQUIRED_FIELDS) | ({LABEL} if config.require_label else set())
    schema_columns = {
        f.name: pa.Column(
            nullable=f.name not in required,
            checks=checks.get(f.name, []),
            unique=f.name == "transaction_id",
            report_duplicates="exclude_first",
        )
        for f in FIELDS
        if f.name in columns
    }
    frame_checks = []
    if "label_known_at" in columns:
        frame_checks.append(
            pa.Check(
                lambda d: (
                    d["label_known_at"].isna()
                    | d["timestamp"].isna()
                    | (d["label_known_at"] >= d["timestamp"])
                ),
                error="label known before the transaction happened",
            )
        )
    return pa.DataFrameSchema(schema_columns, checks=frame_checks, name="transactions")


_READABLE = {
    "not_nullable": "missing",
    "field_uniqueness": "duplicate (an earlier row has this id)",
}


def _schema_failures(typed: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    try:
        schema.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as e:
        fc = e.failure_cases
        fc = fc[fc["index"].notna()]
        frame_level = fc["schema_context"] == "DataFrameSchema"
        # A frame-wide check reports every column of a failing row; keep one entry per row.
        parts = [
            fc[~frame_level],
            fc[frame_level].drop_duplicates("index").assign(column="row", failure_case=""),
        ]
        fc = pd.concat([part for part in parts if len(part)])
        return pd.DataFrame(
            {
                "index": fc["index"].to_numpy(),
                "column": fc["column"].astype(str).to_numpy(),
                "check": fc["check"].astype(str).map(lambda c: _READABLE.get(c, c)).to_numpy(),
                "value": fc["failure_case"].astype(str).str.slice(0, 80).to_numpy(),
            }
        )
    return pd.DataFrame(columns=["index", "column", "check", "value"])


def validate_transactions(
    frame: pd.DataFrame,
    config: ValidationConfig | None = None,
    extra_numeric: list[str] | None = None,
) -> ValidationResult:
    """Validate a canonical frame (as produced by the loader).

    Args:
        frame: Canonical layout, values as read, optionally with ``source_row``.
        config: Limits and requirements.
        extra_numeric: Extra feature columns kept by the mapping (must be numbers).

    Returns:
        Accepted rows (typed), quarantined rows (as read, with reasons) and the report.
    """
    config = config or ValidationConfig()
    frame = frame.reset_index(drop=True)
    typed, parse_failures = parse_types(frame, extra_numeric)
    schema = build_schema(config, list(typed.columns))
    failures = pd.concat([parse_failures, _schema_failures(typed, schema)], ignore_index=True)
    # A value that could not be parsed is also "missing" to the schema: report it once.
    failures = failures.drop_duplicates(["index", "column"], keep="first")
    failures["index"] = failures["index"].astype(np.int64)
    bad_rows = np.sort(failures["index"].unique())

    quarantined = frame.iloc[bad_rows].copy()
    if len(failures):
        shown = ~failures["check"].isin(["missing"]) & (failures["value"] != "")
        value = (" (" + failures["value"] + ")").where(shown, "")
        text = failures["column"] + ": " + failures["check"] + value
        per_row = text.groupby(failures["index"]).agg("; ".join)
        quarantined[REASONS] = per_row.reindex(quarantined.index).to_numpy()
    else:
        quarantined[REASONS] = pd.Series(dtype=str)
    if ROW_NUMBER not in quarantined.columns:
        quarantined.insert(0, ROW_NUMBER, quarantined.index + 1)

    accepted = typed.drop(index=bad_rows)
    if LABEL in accepted.columns and accepted[LABEL].notna().all():
        accepted[LABEL] = accepted[LABEL].astype(np.int8)
    elif LABEL in accepted.columns:
        accepted[LABEL] = accepted[LABEL].astype("Int8")
    accepted = accepted.reset_index(drop=True)

    rows_in = len(frame)
    share = len(bad_rows) / rows_in if rows_in else 0.0
    reason_counts = (failures["column"] + ": " + failures["check"]).value_counts()
    report = {
        "rows_in": rows_in,
        "accepted": len(accepted),
        "quarantined": len(quarantined),
        "rejected_share": round(share, 6),
        "max_rejected_share": config.max_rejected_share,
        "passed": bool(rows_in > 0 and share <= config.max_rejected_share),
        "reasons": {str(k): int(v) for k, v in reason_counts.items()},
        "require_label": config.require_label,
    }
    if rows_in == 0:
        report["error"] = "no rows to validate"
    assert report["rows_in"] == report["accepted"] + report["quarantined"]
    return ValidationResult(accepted, quarantined, report)


def check_rejected_share(result: ValidationResult, source: str = "input") -> None:
    """Raise when validation did not pass, with a message a tired engineer can act on.

    Raises:
        RejectedShareError: the share of quarantined rows exceeds the limit, or no rows.
    """
    r = result.report
    if r["rows_in"] == 0:
        raise RejectedShareError(f"{source}: no rows to validate; is the file empty?")
    if not r["passed"]:
        top = ", ".join(f"{k} x{v}" for k, v in list(r["reasons"].items())[:5])
        raise RejectedShareError(
            f"{source}: {r['quarantined']} of {r['rows_in']} rows "
            f"({r['rejected_share']:.2%}) were quarantined, above the limit of "
            f"{r['max_rejected_share']:.2%}. Most common problems: {top}. Fix the data, check the "
            "column mapping (--mapping/--map), or raise the limit with --max-rejected-share."
        )
