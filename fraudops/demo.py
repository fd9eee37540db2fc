"""`fraudops demo`: the main job on embedded defaults.

Today the demo covers the data and training stages of the loop: it generates a card
portfolio's history and a later period with changed behaviour, validates both, and trains and
registers the first model with the Kubeflow pipeline under ``kfp.local``. Later stages (serve,
drift, canary, labels) are added to :func:`run_demo` as they land.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SCALES", "DemoResult", "run_demo"]

MODEL_NAME = "fraud-detector"
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
    from components.frames import write_table
    from components.generator import GeneratorConfig, drift_period, generate_transactions
    from components.validation import (
        ValidationConfig,
        check_rejected_share,
        validate_transactions,
    )

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
                "result": f"{len(frame):,} rows, {frame['is_fraud'].mean():.2%} fraud, "
                f"{validation.report['accepted']:,} accepted, "
                f"{validation.report['quarantined']:,} quarantined",
                "seconds": round(seconds, 1),
            }
        )
        log(
            f"{name}: {len(frame):,} transactions from {config.start_date} for {config.n_days} "
            f"days, {validation.report['accepted']:,} accepted -> {path}"
        )
    _train(home, result, log)
    return result


def _train(home: Path, result: DemoResult, log) -> None:
    """Train and register a model on the history with the pipeline under kfp.local."""
    from components.bundle import fetch_bundle
    from components.store import open_store
    from pipelines.local import run_training_locally

    store_uri = str(home / "store")
    log("training on the history with the Kubeflow pipeline under kfp.local ...")
    run = run_training_locally(
        str(home / "data" / "history.parquet"), store_uri, home / "kfp", model_name=MODEL_NAME
    )
    stage = {"stage": "train + evaluate + gate + register (kfp.local)"}
    if run.version is None:
        log(f"the gate refused the new model: {run.gate.get('reason')}")
        result.stages.append({**stage, "result": "refused", "seconds": round(run.seconds, 1)})
        return
    bundle = fetch_bundle(open_store(store_uri), MODEL_NAME, run.version, home / "bundles")
    test = bundle.metrics()["test"]
    log(
        f"registered {MODEL_NAME} {run.version}: test average precision "
        f"{test['average_precision']:.3f}, ROC-AUC {test['roc_auc']:.3f}, card precision@"
        f"{test['k']} {test['card_precision_at_k']:.3f} ({run.gate.get('reason')})"
    )
    result.stages.append(
        {
            **stage,
            "result": f"{run.version} registered, test AP {test['average_precision']:.3f}",
            "seconds": round(run.seconds, 1),
        }
    )
    result.files["model card"] = str(bundle.folder / "model_card.md")
    result.files["plots"] = str(bundle.folder / "plots")
