"""Column mappings: how another file layout becomes the canonical transaction schema.

A mapping is a small YAML file (or ``canonical=source`` pairs on the command line)::

    name: my-bank-export
    columns:            # canonical name: column in the file
      transaction_id: TXN_ID
      timestamp: POSTED_AT
      amount: AMT
    timestamp:          # optional: how to read the timestamp column
      unit: s           # numeric timestamps: s, ms, us or ns
      origin: "2013-09-01T00:00:00Z"   # numbers count from here (default: the Unix epoch)
    derive:             # canonical fields the file lacks
      customer_id: constant:unknown
      transaction_id: row_number
    keep: ["V\\\\d+"]    # extra columns (regular expressions) passed through as features

Mappings shipped with fraudops are referred to by name (``creditcard``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from components.schema import FIELDS

__all__ = ["ColumnMapping", "MappingError", "builtin_mappings", "load_mapping", "parse_map_options"]

_CANONICAL = {f.name for f in FIELDS}
_DERIVATIONS = ("row_number", "constant:")


class MappingError(ValueError):
    """A column mapping is malformed; the message says which entry and how to fix it."""


@dataclass(frozen=True)
class ColumnMapping:
    """How to turn a source layout into canonical columns.

    Attributes:
        name: Label used in messages and reports.
        columns: Canonical column name -> source column name.
        timestamp_unit: Unit of numeric timestamps (``s``, ``ms``, ``us``, ``ns``), if numeric.
        timestamp_origin: Origin of numeric timestamps (ISO date-time), default the Unix epoch.
        timestamp_format: ``strftime`` format of text timestamps (default: ISO 8601).
        derive: Canonical column -> derivation (``row_number`` or ``constant:<value>``).
        keep: Regular expressions of extra source columns to pass through unchanged.
        notes: Human-readable caveats printed whenever the mapping is used.
    """

    name: str = "identity"
    columns: dict[str, str] = field(default_factory=dict)
    timestamp_unit: str | None = None
    timestamp_origin: str | None = None
    timestamp_format: str | None = None
    derive: dict[str, str] = field(default_factory=dict)
    keep: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for canonical in (*self.columns, *self.derive):
            if canonical not in _CANONICAL:
                raise MappingError(
                    f"mapping {self.name!r}: {canonical!r} is not a canonical column; "
                    f"use one of: {', '.join(sorted(_CANONICAL))}"
                )
        for canonical, how in self.derive.items():
            if not how.startswith(_DERIVATIONS):
                raise MappingError(
                    f"mapping {self.name!r}: cannot derive {canonical!r} with {how!r}; "
                    "use 'row_number' or 'constant:<value>'"
                )
        if self.timestamp_unit not in (None, "s", "ms", "us", "ns"):
            raise MappingError(
                f"mapping {self.name!r}: timestamp unit {self.timestamp_unit!r} is not one of "
                "s, ms, us, ns"
            )
        for pattern in self.keep:
            try:
                re.compile(pattern)
            except re.error as e:
                raise MappingError(
                    f"mapping {self.name!r}: keep pattern {pattern!r} is not a valid regular "
                    f"expression ({e})"
                ) from e

    def merged(self, overrides: dict[str, str]) -> ColumnMapping:
        """Return a copy whose ``columns`` are updated with ``overrides`` (CLI ``--map``)."""
        if not overrides:
            return self
        return ColumnMapping(
            name=self.name if self.columns or self.derive else "command line",
            columns={**self.columns, **overrides},
            timestamp_unit=self.timestamp_unit,
            timestamp_origin=self.timestamp_origin,
            timestamp_format=self.timestamp_format,
            derive={k: v for k, v in self.derive.items() if k not in overrides},
            keep=self.keep,
            notes=self.notes,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "mapping") -> ColumnMapping:
        """Build a mapping from the YAML structure documented in this module.

        Raises:
            MappingError: unknown keys or malformed entries.
        """
        if not isinstance(data, dict):
            raise MappingError(f"mapping {name!r}: expected a YAML mapping at the top level")
        unknown = set(data) - {
            "name",
            "description",
            "columns",
            "timestamp",
            "derive",
            "keep",
            "notes",
        }
        if unknown:
            raise MappingError(
                f"mapping {name!r}: unknown keys {sorted(unknown)}; allowed: name, description, "
                "columns, timestamp, derive, keep, notes"
            )
        ts = data.get("timestamp") or {}
        if not isinstance(ts, dict):
            raise MappingError(
                f"mapping {name!r}: 'timestamp' must be a mapping (unit/origin/format)"
            )
        notes = data.get("notes") or ()
        return cls(
            name=str(data.get("name", name)),
            columns={str(k): str(v) for k, v in (data.get("columns") or {}).items()},
            timestamp_unit=ts.get("unit"),
            timestamp_origin=ts.get("origin"),
            timestamp_format=ts.get("format"),
            derive={str(k): str(v) for k, v in (data.get("derive") or {}).items()},
            keep=tuple(str(p) for p in data.get("keep") or ()),
            notes=(notes,) if isinstance(notes, str) else tuple(str(n) for n in notes),
        )


def builtin_mappings() -> dict[str, Path]:
    """Return the mappings shipped with fraudops, by name."""
    folder = resources.files("components") / "mappings"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_mapping(spec: str | Path | None) -> ColumnMapping:
    """Load a mapping from a built-in name, a YAML file, or return the identity mapping.

    Args:
        spec: ``None`` (identity), a built-in name such as ``creditcard``, or a YAML path.

    Raises:
        MappingError: the file does not exist, is not YAML, or is malformed.
    """
    if spec is None or str(spec) == "":
        return ColumnMapping()
    builtins = builtin_mappings()
    path = builtins.get(str(spec), Path(spec))
    if not path.is_file():
        raise MappingError(
            f"mapping {str(spec)!r} is neither a file nor a built-in mapping "
            f"(built-in: {', '.join(sorted(builtins))})"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MappingError(f"mapping file {path} is not valid YAML: {e}") from e
    return ColumnMapping.from_dict(data, name=path.stem)


def parse_map_options(pairs: list[str] | None) -> dict[str, str]:
    """Parse ``canonical=source`` options from the command line.

    Raises:
        MappingError: a pair has no ``=`` or names a non-canonical column.
    """
    result: dict[str, str] = {}
    for pair in pairs or []:
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise MappingError(
                f"--map {pair!r}: expected canonical=source, e.g. --map amount=Amount"
            )
        if canonical.strip() not in _CANONICAL:
            raise MappingError(
                f"--map {pair!r}: {canonical.strip()!r} is not a canonical column; "
                f"use one of: {', '.join(sorted(_CANONICAL))}"
            )
        result[canonical.strip()] = source.strip()
    return result
