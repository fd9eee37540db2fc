"""`fraudops demo`: the main job on embedded defaults.

Today the demo covers the data stage of the loop: it generates a card portfolio's history and a
later period with changed behaviour, and validates both. Later stages (train, serve, drift,
canary, labels) are added to :func:`run_demo` as they land.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from components.frames import write_table
from components.generator import GeneratorConfig, drift_period, generate_transactions
from components.validation import ValidationConfig, check_rejected_share, validate_transactions

__all__ = ["SCALES", "DemoResult", "run_demo"]

SCALES = {"tiny": 20_000, "small": 200_000, "medium": 1_000_000, "large": 5_000_000}


@dataclass
class DemoResult:
    """What the demo produced: one row per stage and the files to open."""

    stages: list[dict] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def run_demo(home: Path, scale: str = "small", seed: int = 7, log=print) -> DemoResult:
    """Run the demo's stages and return their results.

    Args:
        home: Working folder for data and outputs.
        scale: One of :data:`SCALES` (number of transactions of the history).
        seed: Seed of the generated portfolio.
        log: Called with one line per stage.

    Raises:
        RejectedShareError: generated data did not validate (a bug, not bad luck).
    """
    result = DemoResult()
    base = GeneratorConfig.for_transactions(SCALES[scale], n_days=60, seed=seed)
    periods = {"history": base, "drifted": drift_period(base, n_days=14)}
    for name, config in periods.items():
        started = time.perf_counter()
        frame = generate_transactions(config)
        path = write_table(frame, home / "data" / f"{name}.parquet")
        validation = validate_transactions(frame, ValidationConfig(require_label=True))
        check_rejected_share(validation, str(path))
        seconds = time.perf_counter() - started
        result.files[f"{name} data"] = str(path)
        result.stages.append(
            {
                "stage": f"generate + validate {name}",
                "rows": len(frame),
                "fraud share": f"{frame['is_fraud'].mean():.2%}",
                "accepted": validation.report["accepted"],
                "quarantined": validation.report["quarantined"],
                "seconds": round(seconds, 2),
            }
        )
        log(
            f"{name}: {len(frame):,} transactions from {config.start_date} for {config.n_days} "
            f"days, {validation.report['accepted']:,} accepted -> {path}"
        )
    return result
