"""Pipeline step: validate the training data."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from components.frames import frame_sha256
from components.loaders import load_transactions
from components.mapping import load_mapping
from components.steps.io import fetch_input, write_json
from components.validation import ValidationConfig, check_rejected_share, validate_transactions

__all__ = ["validate_step"]


def validate_step(
    data_uri: str,
    mapping: str,
    max_rejected_share: float,
    out_data: str,
    out_report: str,
    out_quarantine: str,
) -> dict[str, Any]:
    """Load and validate the training data (labels required); write the accepted rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = fetch_input(data_uri, Path(tmp))
        loaded = load_transactions(path, load_mapping(mapping or None), require_label=True)
    result = validate_transactions(
        loaded.frame,
        ValidationConfig(max_rejected_share=max_rejected_share, require_label=True),
        extra_numeric=loaded.extra_columns,
    )
    report = {
        "source": data_uri,
        "mapping": loaded.mapping.name,
        "notes": loaded.notes,
        **result.report,
    }
    report["extra_columns"] = loaded.extra_columns
    report["data_sha256"] = frame_sha256(result.accepted)
    write_json(out_report, report)
    result.quarantined.to_csv(out_quarantine, index=False)
    check_rejected_share(result, data_uri)
    result.accepted.to_parquet(out_data, index=False)
    return report
