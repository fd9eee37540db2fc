"""Run the training pipeline on this machine with ``kfp.local`` (no cluster needed)."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.audit import read_audit
from components.bundle import BundleError, list_versions
from components.store import open_store
from pipelines.training import build_training_pipeline

__all__ = ["LocalRunResult", "PipelineFailedError", "run_training_locally"]


class PipelineFailedError(RuntimeError):
    """A step of the local pipeline run failed; the message shows its error and the log."""


@dataclass
class LocalRunResult:
    """What a local pipeline run produced.

    Attributes:
        version: The registered version, or None when the gate refused the challenger.
        gate: The gate's decision and numbers.
        seconds: Wall-clock time of the run.
        pipeline_root: Where ``kfp.local`` kept the task outputs (artifacts).
    """

    version: str | None
    gate: dict[str, Any]
    seconds: float
    pipeline_root: Path


def run_training_locally(
    data_uri: str,
    store_uri: str,
    pipeline_root: Path,
    quiet: bool = True,
    **params: Any,
) -> LocalRunResult:
    """Run the whole training pipeline with ``kfp.local.SubprocessRunner``.

    Every step runs as a subprocess with this Python, exactly the component code a cluster runs.

    Args:
        data_uri: Training data (path or s3:// URI).
        store_uri: Object store for bundles (path, file:// or s3://).
        pipeline_root: Folder for kfp.local's artifacts.
        quiet: Send kfp.local's task logs to ``<pipeline_root>/last-run.log`` instead of the
            terminal (a failure still shows the failing task's error).
        **params: Other pipeline parameters (model_name, model_type, threshold_policy, ...).

    Raises:
        PipelineFailedError: a step failed; the message names it, shows its error and says
            where the logs are.
    """
    from kfp import local

    store_uri = _absolute(store_uri)
    data_uri = _absolute(data_uri)
    name = params.get("model_name", "fraud-detector")
    store = open_store(store_uri)
    try:
        before = set(list_versions(store, name))
    except BundleError:
        before = set()
    gates_before = len(read_audit(store, "gate"))
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root.resolve()),
        raise_on_error=True,
    )
    logger = logging.getLogger("kfp.local")
    level = logger.level
    log_path = pipeline_root / "last-run.log"
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if quiet:
            logger.setLevel(logging.WARNING)
            stack.callback(logger.setLevel, level)
            log = stack.enter_context(log_path.open("w"))
            stack.enter_context(contextlib.redirect_stdout(log))
            # kfp.local warns per task that the image and display names are not used locally:
            # true, and expected (SubprocessRunner runs the same code in this environment).
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=".*non-Python base image", module="kfp")
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
        try:
            build_training_pipeline()(data_uri=data_uri, store_uri=store_uri, **params)
        except RuntimeError as e:
            detail = _task_error(log_path) if quiet else ""
            raise PipelineFailedError(
                f"the training pipeline failed: {_plain(str(e))}{detail}\n"
                f"Full task logs: {log_path if quiet else 'above'}"
            ) from e
    seconds = time.perf_counter() - started
    new = sorted(set(list_versions(store, name)) - before, key=lambda v: int(v[1:]))
    gates = read_audit(store, "gate")
    gate = gates[-1]["outcome"] if len(gates) > gates_before else {}
    return LocalRunResult(new[-1] if new else None, gate, seconds, pipeline_root)


def _plain(text: str) -> str:
    """Drop the terminal colour codes kfp puts in its messages."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _task_error(log_path: Path, lines: int = 12) -> str:
    """The end of the last traceback in the task logs, to show with the failure."""
    try:
        text = log_path.read_text().splitlines()
    except OSError:
        return ""
    starts = [i for i, line in enumerate(text) if "Traceback (most recent call last)" in line]
    if not starts:
        return ""
    tail = [line.strip() for line in text[starts[-1] :] if line.strip()][-lines:]
    return "\n  " + "\n  ".join(tail)


def _absolute(uri: str) -> str:
    """Subprocesses may run elsewhere: make local paths absolute."""
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return str(Path(uri.removeprefix("file://")).resolve())
