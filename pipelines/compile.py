"""Compile the pipelines to YAML (committed under ``pipelines/compiled/``)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from components.kfp_components import DEFAULT_IMAGE
from pipelines.training import build_training_pipeline

__all__ = ["COMPILED", "compile_training"]

COMPILED = Path(__file__).parent / "compiled" / "training.yaml"


def compile_training(out: Path = COMPILED, image: str = DEFAULT_IMAGE) -> Path:
    """Compile the training pipeline for ``image`` to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_training_pipeline(image), str(out))
    return out
