"""Fraud-grade evaluation: ranking metrics, card precision@k, and a stated threshold policy.

The decision threshold is chosen on the validation window by a policy (an alert budget per
day, or a target precision) and then judged on the test window, never chosen on the test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "Evaluation",
    "ThresholdPolicy",
    "card_precision_at_k",
    "choose_threshold",
    "evaluate_scores",
    "recall_at_fpr",
    "roc_points",
]


@dataclass(frozen=True)
class ThresholdPolicy:
    """How the decision threshold is chosen.

    Attributes:
        kind: ``alert_budget`` (flag about ``alerts_per_day`` transactions a day, the capacity
            of the fraud team) or ``target_precision`` (the lowest threshold whose precision
            reaches ``precision``, i.e. the most recall at that precision).
        alerts_per_day: Daily alert budget, for ``alert_budget``.
        precision: Target precision, for ``target_precision``.
    """

    kind: str = "alert_budget"
    alerts_per_day: float = 100.0
    precision: float = 0.8

    def __post_init__(self) -> None:
        if self.kind not in ("alert_budget", "target_precision"):
            raise ValueError(
                f"threshold policy {self.kind!r}: choose 'alert_budget' or 'target_precision'"
            )
        if self.kind == "alert_budget" and self.alerts_per_day <= 0:
            raise ValueError("alerts_per_day must be positive")
        if self.kind == "target_precision" and not 0 < self.precision <= 1:
            raise ValueError("precision must be in (0, 1]")

    def describe(self) -> str:
        """One line for the model card."""
        if self.kind == "alert_budget":
            return f"alert budget: about {self.alerts_per_day:g} alerts a day (validation window)"
        return f"target precision: {self.precision:.0%} on the validation window, most recall"

    @classmethod
    def parse(cls, text: str) -> ThresholdPolicy:
        """Parse ``alert_budget:100`` or ``target_precision:0.8`` (CLI and pipeline form).

        Raises:
            ValueError: the text is not one of these forms.
        """
        kind, _, value = text.partition(":")
        try:
            if kind == "alert_budget":
                return cls(kind, alerts_per_day=float(value or 100))
            if kind == "target_precision":
                return cls(kind, precision=float(value or 0.8))
        except ValueError as e:
            raise ValueError(f"threshold policy {text!r}: {value!r} is not a number") from e
        raise ValueError(
            f"threshold policy {text!r}: use alert_budget:<alerts a day> or "
            "target_precision:<0..1>, e.g. alert_budget:100"
        )


def choose_threshold(
    y: np.ndarray, scores: np.ndarray, days: float, policy: ThresholdPolicy
) -> dict[str, float | str | bool]:
    """Pick the decision threshold on a (validation) window.

    Args:
        y: Labels.
        scores: Model scores.
        days: Length of the window in days (for the alert budget).
        policy: The policy.

    Returns:
        ``threshold``, the policy, and whether the target was reachable.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if policy.kind == "alert_budget":
        budget = max(1, round(policy.alerts_per_day * days))
        ordered = np.sort(scores)[::-1]
        threshold = float(ordered[min(budget, len(ordered)) - 1])
        return {"threshold": threshold, "policy": policy.describe(), "target_met": True}
    precision, _, thresholds = precision_recall_curve(y, scores)
    ok = np.flatnonzero(precision[:-1] >= policy.precision)
    if len(ok):
        return {
            "threshold": float(thresholds[ok[0]]),
            "policy": policy.describe(),
            "target_met": True,
        }
    best = int(np.argmax(precision[:-1]))
    return {
        "threshold": float(thresholds[best]),
        "policy": policy.describe() + f" (not reachable: best precision {precision[best]:.2f})",
        "target_met": False,
    }


def card_precision_at_k(
    customer_id: pd.Series, timestamp: pd.Series, y: np.ndarray, scores: np.ndarray, k: int = 100
) -> float:
    """Mean over days of the share of fraudulent cards among the ``k`` highest-scored cards.

    A card's daily score is its highest transaction score that day; it is fraudulent that
    day when any of its transactions is. This is what a team that checks ``k`` cards a day sees.
    """
    frame = pd.DataFrame(
        {
            "day": timestamp.dt.floor("D").to_numpy(),
            "card": customer_id.astype(str).to_numpy(),
            "y": np.asarray(y),
            "score": np.asarray(scores),
        }
    )
    cards = frame.groupby(["day", "card"], sort=False).agg(y=("y", "max"), score=("score", "max"))
    cards = cards.sort_values("score", ascending=False)
    top = cards.groupby(level="day", sort=False).head(k)
    per_day = top.groupby(level="day")["y"].sum() / k
    return float(per_day.mean())


def roc_points(y: np.ndarray, scores: np.ndarray, n: int = 200) -> dict[str, list[float]]:
    """At most ``n`` points of the ROC curve (for the KFP UI), thresholds clipped to [0, 1]."""
    f, t, thr = roc_curve(y, scores)
    keep = np.unique(np.linspace(0, len(f) - 1, min(n, len(f))).astype(int))
    return {
        "fpr": f[keep].tolist(),
        "tpr": t[keep].tolist(),
        "thresholds": np.clip(thr[keep], 0, 1).tolist(),
    }


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float = 0.01) -> float:
    """Highest recall with a false-positive rate at most ``fpr``."""
    f, t, _ = roc_curve(y, scores)
    return float(t[f <= fpr].max())


@dataclass
class Evaluation:
    """Metrics of one model on one window, at one threshold."""

    rows: int
    frauds: int
    average_precision: float
    roc_auc: float
    card_precision_at_k: float
    k: int
    recall_at_fpr: float
    fpr: float
    threshold: float
    precision: float
    recall: float
    f1: float
    alerts_per_day: float
    tn: int
    fp: int
    fn: int
    tp: int

    def as_dict(self) -> dict:
        """Plain numbers, for JSON."""
        return asdict(self)


def evaluate_scores(
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    customer_id: pd.Series,
    timestamp: pd.Series,
    k: int = 100,
    fpr: float = 0.01,
) -> Evaluation:
    """Compute every metric of the model card on one window.

    Raises:
        ValueError: the window has only one class (metrics are undefined).
    """
    y = np.asarray(y, dtype=np.int32)
    scores = np.asarray(scores, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError(
            f"the evaluation window has only {'fraud' if y.min() else 'genuine'} transactions; "
            "ranking metrics need both classes: widen the test window"
        )
    decision = scores >= threshold
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, decision, labels=[0, 1]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    days = max((timestamp.max() - timestamp.min()) / pd.Timedelta(days=1), 1.0)
    return Evaluation(
        rows=len(y),
        frauds=int(y.sum()),
        average_precision=float(average_precision_score(y, scores)),
        roc_auc=float(roc_auc_score(y, scores)),
        card_precision_at_k=card_precision_at_k(customer_id, timestamp, y, scores, k),
        k=k,
        recall_at_fpr=recall_at_fpr(y, scores, fpr),
        fpr=fpr,
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        alerts_per_day=float(decision.sum() / days),
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
    )
