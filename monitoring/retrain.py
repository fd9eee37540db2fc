"""Trigger retraining: locally with kfp.local, or as a run on a Kubeflow Pipelines backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from components.audit import read_audit, record_event
from components.store import ObjectStore

__all__ = ["RetrainConfig", "last_retrain", "trigger_retraining"]


@dataclass(frozen=True)
class RetrainConfig:
    """Where and how to retrain.

    Attributes:
        mode: ``none`` (decide only), ``local`` (run the pipeline here with kfp.local) or
            ``kfp`` (create a run on a KFP backend).
        data_uri: The newest training data (path or s3:// URI).
        kfp_host: KFP API endpoint, for ``kfp``.
        experiment: KFP experiment, for ``kfp``.
        pipeline_root: kfp.local's artifact folder, for ``local``.
        params: Other pipeline parameters (model_type, threshold_policy, ...).
    """

    mode: str = "none"
    data_uri: str = ""
    kfp_host: str = ""
    experiment: str = "fraudops"
    pipeline_root: str = ".fraudops/kfp"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("none", "local", "kfp"):
            raise ValueError(f"retrain mode {self.mode!r}: choose none, local or kfp")
        if self.mode != "none" and not self.data_uri:
            raise ValueError("retraining needs the newest training data: set --retrain-data")
        if self.mode == "kfp" and not self.kfp_host:
            raise ValueError("retraining on a cluster needs the KFP endpoint: set --kfp-host")


def last_retrain(store: ObjectStore, model: str) -> datetime | None:
    """When retraining of ``model`` was last triggered (from the audit log)."""
    times = [
        datetime.fromisoformat(e["time"])
        for e in read_audit(store, "retrain")
        if e["inputs"].get("model") == model
    ]
    return max(times) if times else None


def trigger_retraining(
    store: ObjectStore,
    store_uri: str,
    model: str,
    config: RetrainConfig,
    reason: str,
    cooldown_hours: float,
    now: datetime | None = None,
    kfp_client=None,
) -> dict[str, Any]:
    """Start retraining unless the cooldown forbids it; record what happened in the audit log.

    Args:
        store: The store with the audit log.
        store_uri: Its URI (passed to the pipeline).
        model: Model name.
        config: Where and how to retrain.
        reason: Why (recorded).
        cooldown_hours: No new retraining within this time of the last.
        now: The current time.
        kfp_client: A ``kfp.Client`` to use (default: one for ``config.kfp_host``).

    Returns:
        ``status`` (``started``, ``cooldown``, ``disabled``), and the new version (local) or the
        KFP run id (cluster).
    """
    now = now or datetime.now(UTC)
    if config.mode == "none":
        return {"status": "disabled"}
    previous = last_retrain(store, model)
    if previous and now - previous < timedelta(hours=cooldown_hours):
        outcome = {
            "status": "cooldown",
            "last_retrain": previous.isoformat(),
            "cooldown_hours": cooldown_hours,
        }
        record_event(store, "retrain_skipped", {"model": model, "reason": reason}, outcome)
        return outcome
    inputs = {"model": model, "reason": reason, "mode": config.mode, "data_uri": config.data_uri}
    if config.mode == "local":
        from pipelines.local import run_training_locally

        run = run_training_locally(
            config.data_uri,
            store_uri,
            Path(config.pipeline_root),
            model_name=model,
            **config.params,
        )
        outcome = {
            "status": "started",
            "version": run.version,
            "gate": run.gate,
            "seconds": round(run.seconds, 1),
        }
    else:
        from pipelines.submit import submit_training

        run = submit_training(
            config.kfp_host,
            {
                "data_uri": config.data_uri,
                "store_uri": store_uri,
                "model_name": model,
                **config.params,
            },
            config.experiment,
            client=kfp_client,
        )
        outcome = {"status": "started", **run}
    record_event(store, "retrain", inputs, outcome)
    return outcome
