"""Evaluation plots as PNG files: what fraud analysts would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

__all__ = ["write_plots"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(
    folder: Path,
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    importance: dict[str, float],
    title: str,
    top_features: int = 20,
) -> dict[str, Path]:
    """Write ROC, precision-recall, confusion matrix, feature importance and score plots.

    Returns:
        Plot name -> PNG path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y)
    scores = np.asarray(scores)
    out: dict[str, Path] = {}

    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(fpr, tpr, lw=2)
    ax.plot([0, 1], [0, 1], ls="--", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {title}")
    out["roc"] = _save(fig, folder / "roc.png")

    precision, recall, _ = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(recall, precision, lw=2)
    ax.axhline(y.mean(), ls="--", c="grey", label=f"fraud share {y.mean():.2%}")
    ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall: {title}")
    ax.legend()
    out["precision_recall"] = _save(fig, folder / "precision_recall.png")

    decision = scores >= threshold
    matrix = np.array(
        [
            [np.sum(~decision & (y == 0)), np.sum(decision & (y == 0))],
            [np.sum(~decision & (y == 1)), np.sum(decision & (y == 1))],
        ]
    )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=12)
    ax.set_xticks([0, 1], ["genuine", "fraud"])
    ax.set_yticks([0, 1], ["genuine", "fraud"])
    ax.set(xlabel="decision", ylabel="truth", title=f"confusion matrix at {threshold:.3f}")
    out["confusion_matrix"] = _save(fig, folder / "confusion_matrix.png")

    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top_features][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.2))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set(xlabel="importance", title=f"feature importance: {title}")
    out["feature_importance"] = _save(fig, folder / "feature_importance.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    ax.hist(scores[y == 0], bins=bins, alpha=0.6, density=True, label="genuine", log=True)
    ax.hist(scores[y == 1], bins=bins, alpha=0.6, density=True, label="fraud", log=True)
    ax.axvline(threshold, c="k", ls="--", label="threshold")
    ax.set(xlabel="score", ylabel="density (log)", title=f"score distribution: {title}")
    ax.legend()
    out["score_distribution"] = _save(fig, folder / "score_distribution.png")
    return out
