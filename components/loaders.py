"""Read transaction files (CSV, Parquet) and bring them into the canonical layout.

The loader renames and derives columns but does not judge values: it keeps what it read so
that validation can quarantine bad rows with the value that was wrong.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.mapping import ColumnMapping
from components.schema import FIELDS, LABEL, REQUIRED_FIELDS

__all__ = [
    "DataFormatError",
    "LoadResult",
    "MissingColumnError",
    "apply_mapping",
    "detect_format",
    "load_transactions",
    "read_table",
]

ROW_NUMBER = "source_row"
_CANONICAL = {f.name for f in FIELDS}
_PARQUET_MAGIC = b"PAR1"


class DataFormatError(ValueError):
    """The file is not what it claims to be (wrong format, unreadable, empty)."""


class MissingColumnError(ValueError):
    """A required canonical column is neither in the file nor provided by the mapping."""


@dataclass
class LoadResult:
    """A loaded file in the canonical layout.

    Attributes:
        frame: Canonical columns (values as read) plus ``source_row`` (1-based data row number)
            and any extra columns the mapping keeps.
        source: Path of the file.
        file_format: ``csv`` or ``parquet``.
        mapping: The mapping that was applied.
        extra_columns: Source columns kept as extra features.
        notes: What the loader derived or assumed, to be shown to the user.
    """

    frame: pd.DataFrame
    source: Path
    file_format: str
    mapping: ColumnMapping
    extra_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def detect_format(path: Path, declared: str | None = None) -> str:
    """Decide whether ``path`` is CSV or Parquet, checking the content against the claim.

    Args:
        path: The file.
        declared: ``csv`` or ``parquet`` to override the extension.

    Raises:
        DataFormatError: the file is missing, empty, or its content contradicts the claim.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        raise DataFormatError(f"{path}: the file is empty")
    is_parquet = head == _PARQUET_MAGIC
    suffixes = "".join(path.suffixes).lower()
    claimed = declared or (
        "parquet"
        if suffixes.endswith((".parquet", ".pq"))
        else "csv"
        if ".csv" in suffixes
        else None
    )
    if claimed is None:
        return "parquet" if is_parquet else "csv"
    if claimed == "parquet" and not is_parquet:
        raise DataFormatError(
            f"{path}: claims to be Parquet but does not start with the Parquet magic bytes; "
            "if it is a CSV file, rename it to .csv or pass --format csv"
        )
    if claimed == "csv" and is_parquet:
        raise DataFormatError(
            f"{path}: claims to be CSV but is a Parquet file; rename it to .parquet or pass "
            "--format parquet"
        )
    return claimed


def read_table(path: Path, file_format: str) -> pd.DataFrame:
    """Read a CSV (every column as text) or a Parquet file (with its own types).

    Raises:
        DataFormatError: the file cannot be parsed in that format.
    """
    try:
        if file_format == "parquet":
            table = pq.read_table(path)
            return table.to_pandas(types_mapper=None)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], low_memory=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError(f"{path}: not a readable Parquet file ({e})") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFormatError(
            f"{path}: not a readable CSV file ({e}); check the delimiter (a comma is expected) "
            "and the encoding (UTF-8)"
        ) from e
    except pd.errors.EmptyDataError as e:
        raise DataFormatError(f"{path}: the CSV file has no header row") from e


def _numeric_timestamps(values: pd.Series, mapping: ColumnMapping) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    origin = pd.Timestamp(mapping.timestamp_origin or "1970-01-01T00:00:00Z")
    if origin.tzinfo is None:
        origin = origin.tz_localize("UTC")
    parsed = origin + pd.to_timedelta(numbers, unit=mapping.timestamp_unit)
    # Keep unparsable originals as text so validation reports them with their value.
    bad = numbers.isna() & values.notna()
    if bad.any():
        return parsed.astype(object).where(~bad, values)
    return parsed


def apply_mapping(
    raw: pd.DataFrame, mapping: ColumnMapping, source: str = "<frame>", require_label: bool = False
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rename, derive and select columns so that ``raw`` has the canonical layout.

    Args:
        raw: The frame as read.
        mapping: Column mapping to apply.
        source: Name of the input, for messages.
        require_label: Also require ``is_fraud`` (training and evaluation).

    Returns:
        The canonical frame, the extra columns kept, and notes on what was derived.

    Raises:
        MissingColumnError: a required column is missing; the message names it, lists close
            matches in the file and suggests the mapping option.
    """
    notes = list(mapping.notes)
    missing_sources = [src for src in mapping.columns.values() if src not in raw.columns]
    if missing_sources:
        raise MissingColumnError(
            f"{source}: mapping {mapping.name!r} refers to column(s) {missing_sources} that the "
            f"file does not have; its columns are: {', '.join(map(str, raw.columns[:30]))}"
        )
    frame = pd.DataFrame(index=raw.index)
    for canonical_name in raw.columns:
        if canonical_name in _CANONICAL:
            frame[canonical_name] = raw[canonical_name]
    for canonical_name, src in mapping.columns.items():
        frame[canonical_name] = raw[src]
    for canonical_name, how in mapping.derive.items():
        if canonical_name in frame.columns:
            continue
        if how == "row_number":
            frame[canonical_name] = pd.Series(
                np.char.add("row-", np.arange(1, len(raw) + 1).astype(str)), index=raw.index
            )
        else:
            frame[canonical_name] = how.removeprefix("constant:")
        notes.append(f"{canonical_name} derived as {how}")
    if "timestamp" in frame.columns and mapping.timestamp_unit:
        frame["timestamp"] = _numeric_timestamps(frame["timestamp"], mapping)
    required = [*REQUIRED_FIELDS, LABEL] if require_label else list(REQUIRED_FIELDS)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col, [str(c) for c in raw.columns], n=1, cutoff=0.5)
            example = close[0] if close else "<column in your file>"
            hints.append(f"--map {col}={example}")
        raise MissingColumnError(
            f"{source}: required column(s) {', '.join(repr(c) for c in missing)} missing. "
            f"The file has: {', '.join(map(str, raw.columns[:30]))}. "
            f"Map them with {' '.join(hints)}, or pass --mapping <file.yaml> "
            "(built-in: --mapping creditcard)."
        )
    extra: list[str] = []
    if mapping.keep:
        pattern = re.compile("|".join(f"(?:{p})" for p in mapping.keep))
        extra = [c for c in raw.columns if pattern.fullmatch(str(c)) and c not in frame.columns]
        for c in extra:
            frame[c] = raw[c]
    frame[ROW_NUMBER] = np.arange(1, len(raw) + 1)
    return frame, extra, notes


def load_transactions(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    file_format: str | None = None,
    require_label: bool = False,
) -> LoadResult:
    """Load a CSV or Parquet file of transactions into the canonical layout.

    Args:
        path: File to read.
        mapping: Column mapping (default: the file already uses canonical names).
        file_format: ``csv`` or ``parquet`` to override detection by extension.
        require_label: Also require the ``is_fraud`` label.

    Raises:
        DataFormatError: wrong or unreadable format.
        MissingColumnError: a required column is missing.
    """
    path = Path(path)
    mapping = mapping or ColumnMapping()
    fmt = detect_format(path, file_format)
    raw = read_table(path, fmt)
    frame, extra, notes = apply_mapping(raw, mapping, str(path), require_label)
    return LoadResult(frame, path, fmt, mapping, extra, notes)
