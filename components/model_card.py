"""The model card: what a compliance officer needs to know about a model, as Markdown and JSON."""

from __future__ import annotations

from typing import Any

__all__ = ["KNOWN_LIMITS", "build_model_card", "render_markdown"]

KNOWN_LIMITS = [
    "Trained on the transactions of the training window only; behaviour that changed since "
    "(new fraud patterns, new merchants, shifted amounts) is not represented until retraining.",
    "Terminal fraud rates use labels older than the label delay; fraud at a terminal shows up "
    "in the features only after that delay.",
    "Scores rank transactions by risk; they are not calibrated probabilities when class "
    "weighting or resampling was used.",
    "Reason codes are per-prediction feature contributions of the model, not causal explanations.",
]


def build_model_card(
    name: str,
    model_type: str,
    params: dict[str, Any],
    windows: dict[str, str],
    data: dict[str, Any],
    metrics: dict[str, Any],
    threshold: dict[str, Any],
    features: list[str],
    gate: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """Collect the model card's fields (the JSON form)."""
    return {
        "model": {"name": name, "type": model_type, "parameters": params},
        "intended_use": "Real-time scoring of card transactions for fraud review; alerts go to "
        "analysts, who decide. Not for automated account closure.",
        "training_window": windows,
        "data": data,
        "training": training,
        "threshold": threshold,
        "metrics": metrics,
        "features": features,
        "gate": gate,
        "known_limits": KNOWN_LIMITS,
    }


def render_markdown(card: dict[str, Any]) -> str:
    """Human-readable model card."""
    m, t, test = card["model"], card["threshold"], card["metrics"]["test"]
    lines = [
        f"# Model card: {m['name']} ({m['type']})",
        "",
        f"**Intended use.** {card['intended_use']}",
        "",
        "## Data",
        "",
        *(f"- {k.replace('_', ' ')}: {v}" for k, v in card["training_window"].items()),
        *(f"- {k.replace('_', ' ')}: {v}" for k, v in card["data"].items()),
        "",
        "## Threshold",
        "",
        f"- policy: {t['policy']}",
        f"- threshold: {t['threshold']:.6f}",
        "",
        "## Metrics on the test window",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| average precision (PR-AUC) | {test['average_precision']:.4f} |",
        f"| ROC-AUC | {test['roc_auc']:.4f} |",
        f"| card precision@{test['k']} | {test['card_precision_at_k']:.4f} |",
        f"| recall at FPR {test['fpr']:.0%} | {test['recall_at_fpr']:.4f} |",
        f"| precision at threshold | {test['precision']:.4f} |",
        f"| recall at threshold | {test['recall']:.4f} |",
        f"| F1 at threshold | {test['f1']:.4f} |",
        f"| alerts per day | {test['alerts_per_day']:.1f} |",
        f"| confusion (tn, fp, fn, tp) | {test['tn']}, {test['fp']}, {test['fn']}, {test['tp']} |",
        "",
        "## Gate",
        "",
        f"- decision: {'passed' if card['gate'].get('passed') else 'failed'}: "
        f"{card['gate'].get('reason', '')}",
        "",
        "## Training",
        "",
        *(f"- {k.replace('_', ' ')}: {v}" for k, v in card["training"].items()),
        f"- parameters: `{m['parameters']}`",
        "",
        f"## Features ({len(card['features'])})",
        "",
        ", ".join(f"`{f}`" for f in card["features"]),
        "",
        "## Known limits",
        "",
        *(f"- {limit}" for limit in card["known_limits"]),
        "",
    ]
    return "\n".join(lines)
