"""Canary analysis: is the new version as good as the stable one on the same traffic window?

Pure functions over two :class:`VersionWindow` (one per version, the same time window): the
logged scores and decisions from the inference log, the request and error counts and latency
from a metrics source (the local gateway or Prometheus), and the labels that have arrived. The
thresholds are configuration (:class:`CanaryThresholds`, from YAML with
:func:`load_thresholds`). :func:`analyse` returns a :class:`CanaryVerdict`: ``passed``,
``failed`` or ``inconclusive``, every check with its number, threshold and explanation, and a
one-line reason.

Checks, in order:

=====================  ==========================================================================
``traffic``            both versions saw at least ``min_requests`` requests (else inconclusive)
``error_rate``         canary 5xx + connection errors / requests <= ``max_error_rate``
``error_rate_delta``   canary error rate - stable error rate <= ``max_error_rate_delta``
``latency_p99``        canary p99 latency <= ``max_latency_p99_ms``
``latency_p99_ratio``  canary p99 / stable p99 <= ``max_latency_p99_ratio`` (not compared when the
                       canary's p99 is under ``latency_ratio_min_ms``: that is noise); both
                       latency checks are skipped below ``min_latency_samples`` requests each
``score_psi``          PSI of the canary's scores over the stable scores' deciles
                       <= ``max_score_psi``; above it, it fails only when the PSI is also
                       above what two samples of that size reach by chance
                       (:func:`psi_noise`), otherwise it is inconclusive
``alert_rate_ratio``   canary alert rate / stable alert rate within
                       [``min_alert_rate_ratio``, ``max_alert_rate_ratio``]; outside the band it
                       fails only when the difference is significant (two-proportion z >=
                       ``significance_z``), otherwise it is inconclusive
``precision_ratio``    canary / stable precision >= ``min_precision_ratio``, once the canary has
                       ``min_labelled`` labelled transactions with ``min_labelled_frauds`` frauds
``recall_ratio``       canary / stable recall >= ``min_recall_ratio``, same condition
=====================  ==========================================================================

A check is ``pass``, ``fail``, ``inconclusive`` (too little data to judge) or ``skipped`` (the
number is not available in this mode, e.g. errors without Prometheus, or labels not yet
arrived). The verdict is ``failed`` when any check failed, else ``inconclusive`` when any check
was inconclusive, else ``passed``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.profile import build_profile, population_stability_index
from components.store import ObjectStore

__all__ = [
    "CanaryConfigError",
    "CanaryThresholds",
    "CanaryVerdict",
    "Check",
    "VersionMetrics",
    "VersionWindow",
    "analyse",
    "load_thresholds",
    "psi_noise",
    "read_windows",
    "score_psi",
    "window_from_frame",
]

SCORE_BINS = 10
LOG_COLUMNS = ["score", "decision", "latency_ms", "tx.transaction_id"]


class CanaryConfigError(ValueError):
    """A threshold is missing, unknown or out of range; the message names it and the fix."""

    user_error = True  # the CLI prints the message as one `error:` line, exit 2


@dataclass(frozen=True)
class CanaryThresholds:
    """When a canary step passes. Every field can be set in the ``--config`` YAML file.

    Attributes:
        min_requests: Each version must have seen this many requests in the window (else the
            step is inconclusive and its window is extended).
        min_transactions: ... and this many logged transactions, for the score, alert-rate and
            label checks.
        max_error_rate: Highest canary error rate (5xx and connection errors / requests).
        max_error_rate_delta: Highest canary error rate minus the stable error rate.
        max_latency_p99_ms: Highest canary p99 latency, in milliseconds.
        max_latency_p99_ratio: Highest canary p99 / stable p99 ...
        latency_ratio_min_ms: ... judged only when the canary's p99 is at least this (below it,
            differences are scheduling noise).
        min_latency_samples: Both latency checks need this many requests per version (the p99
            of fewer is about the slowest single request, e.g. the canary's first, cold one);
            with fewer they are skipped.
        max_score_psi: Highest population stability index of the canary's scores against the
            stable scores' deciles (0.1: a small shift; 0.25: a major one). None (``null`` in
            YAML): measured and recorded but not a gate, for a model retrained on changed
            behaviour, whose scores are expected to differ.
        min_alert_rate_ratio: Lowest canary alert rate / stable alert rate.
        max_alert_rate_ratio: Highest canary alert rate / stable alert rate.
        significance_z: A ratio outside the band fails only when the two alert rates differ by
            at least this many standard errors (two-proportion z); below, it is inconclusive.
        min_labelled: Precision and recall are compared once the canary has this many labelled
            transactions in the window ...
        min_labelled_frauds: ... of which at least this many are frauds.
        min_precision_ratio: Lowest canary precision / stable precision.
        min_recall_ratio: Lowest canary recall / stable recall.
    """

    min_requests: int = 100
    min_transactions: int = 100
    max_error_rate: float = 0.02
    max_error_rate_delta: float = 0.01
    max_latency_p99_ms: float = 250.0
    max_latency_p99_ratio: float = 1.5
    latency_ratio_min_ms: float = 25.0
    min_latency_samples: int = 200
    max_score_psi: float | None = 0.25
    min_alert_rate_ratio: float = 0.5
    max_alert_rate_ratio: float = 2.0
    significance_z: float = 3.0
    min_labelled: int = 200
    min_labelled_frauds: int = 20
    min_precision_ratio: float = 0.8
    min_recall_ratio: float = 0.8

    def __post_init__(self) -> None:
        counts = (
            "min_requests",
            "min_transactions",
            "min_latency_samples",
            "min_labelled",
            "min_labelled_frauds",
        )
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CanaryConfigError(f"{name} is {value!r}: use a whole number >= 1")
        for name in ("max_error_rate", "max_error_rate_delta"):
            if not 0 <= getattr(self, name) <= 1:
                raise CanaryConfigError(
                    f"{name} is {getattr(self, name)!r}: use a share between 0 and 1 (0.01 = 1%)"
                )
        positive = (
            "max_latency_p99_ms",
            "max_latency_p99_ratio",
            *(("max_score_psi",) if self.max_score_psi is not None else ()),
            "max_alert_rate_ratio",
            "significance_z",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise CanaryConfigError(f"{name} is {getattr(self, name)!r}: use a number > 0")
        if not 0 < self.min_alert_rate_ratio <= 1 <= self.max_alert_rate_ratio:
            raise CanaryConfigError(
                f"alert-rate band [{self.min_alert_rate_ratio}, {self.max_alert_rate_ratio}] "
                "must contain 1: use min_alert_rate_ratio in (0, 1] and max_alert_rate_ratio >= 1"
            )
        for name in ("min_precision_ratio", "min_recall_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise CanaryConfigError(
                    f"{name} is {getattr(self, name)!r}: use a ratio between 0 and 1 "
                    "(0.8 = the canary may lose 20%)"
                )

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the audit log)."""
        return asdict(self)


def load_thresholds(path: str | Path | None, **overrides: Any) -> CanaryThresholds:
    """Thresholds from a YAML file (flat, or under a ``thresholds:`` key), then ``overrides``.

    Raises:
        CanaryConfigError: the file is unreadable, not a mapping, or names an unknown field.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CanaryConfigError(f"{path}: cannot read the thresholds ({e})") from e
        if isinstance(loaded, dict) and isinstance(loaded.get("thresholds"), dict):
            loaded = loaded["thresholds"]
        if not isinstance(loaded, dict):
            raise CanaryConfigError(
                f"{path}: expected a mapping of threshold names to numbers, "
                f"got {type(loaded).__name__}"
            )
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(CanaryThresholds)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CanaryConfigError(
            f"{path or 'thresholds'}: unknown threshold(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    for name, value in values.items():
        if name == "max_score_psi" and value is None:  # null: recorded, not a gate
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CanaryConfigError(
                f"{path or 'thresholds'}: {name} is {value!r}; use a number "
                f"(default {getattr(CanaryThresholds, name)!r})"
            )
    return CanaryThresholds(**values)


@dataclass
class VersionMetrics:
    """Request-level numbers of one version over a window, from a metrics source.

    ``None`` means the source cannot know it (e.g. errors without Prometheus in cluster mode).
    """

    requests: int | None = None
    errors_5xx: int | None = None
    errors_connection: int | None = None
    client_errors_4xx: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    source: str = ""


@dataclass
class VersionWindow:
    """One version's traffic in the step window.

    Attributes:
        version: Bundle version.
        scores: Logged fraud scores, one per transaction.
        alerts: Whether each transaction's decision was ``alert``.
        latency_ms: Logged server-side latency per transaction (NaN when not logged).
        metrics: Request counts, errors and latency from the metrics source.
        labels: Per transaction 1 (fraud), 0 (genuine) or NaN (no label yet); None: no labels.
    """

    version: str
    scores: np.ndarray
    alerts: np.ndarray
    latency_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    metrics: VersionMetrics = field(default_factory=VersionMetrics)
    labels: np.ndarray | None = None

    @property
    def transactions(self) -> int:
        """Logged transactions."""
        return len(self.scores)

    @property
    def requests(self) -> int:
        """Requests from the metrics source, else the logged transactions."""
        return self.metrics.requests if self.metrics.requests is not None else self.transactions

    @property
    def errors(self) -> int | None:
        """5xx answers plus failed connections; None when the source cannot count them."""
        counts = (self.metrics.errors_5xx, self.metrics.errors_connection)
        if all(c is None for c in counts):
            return None
        return int(sum(c or 0 for c in counts))

    @property
    def error_rate(self) -> float | None:
        """Errors per request (None when errors are unknown)."""
        errors = self.errors
        if errors is None:
            return None
        denominator = max(self.metrics.requests or 0, errors)
        return errors / denominator if denominator else 0.0

    @property
    def latency_p99_ms(self) -> float | None:
        """p99 latency from the metrics source, else from the log."""
        if self.metrics.latency_p99_ms is not None:
            return self.metrics.latency_p99_ms
        finite = self.latency_ms[np.isfinite(self.latency_ms)] if len(self.latency_ms) else []
        return float(np.quantile(finite, 0.99)) if len(finite) else None

    @property
    def latency_samples(self) -> int:
        """Requests behind the p99: the metrics' request count, else the logged latencies."""
        if self.metrics.latency_p99_ms is not None and self.metrics.requests is not None:
            return self.metrics.requests
        return int(np.isfinite(self.latency_ms).sum()) if len(self.latency_ms) else 0

    @property
    def alert_rate(self) -> float:
        """Share of logged transactions with decision ``alert``."""
        return float(self.alerts.mean()) if len(self.alerts) else 0.0

    def summary(self) -> dict[str, Any]:
        """The window's numbers, JSON-serialisable (for the audit log)."""
        p99 = self.latency_p99_ms
        return {
            "version": self.version,
            "requests": self.metrics.requests,
            "transactions": self.transactions,
            "errors_5xx": self.metrics.errors_5xx,
            "errors_connection": self.metrics.errors_connection,
            "client_errors_4xx": self.metrics.client_errors_4xx,
            "error_rate": _round(self.error_rate),
            "latency_p50_ms": _round(self.metrics.latency_p50_ms),
            "latency_p99_ms": _round(p99),
            "alert_rate": _round(self.alert_rate),
            "mean_score": _round(float(self.scores.mean())) if len(self.scores) else None,
            "labelled": int(np.isfinite(self.labels).sum()) if self.labels is not None else 0,
            "metrics_source": self.metrics.source,
        }


@dataclass
class Check:
    """One comparison of the analysis.

    Attributes:
        name: The check (``error_rate``, ``score_psi``, ...).
        status: ``pass``, ``fail``, ``inconclusive`` or ``skipped``.
        value: The measured number (None when it could not be measured).
        threshold: The limit it was held against, as text (``<= 0.25``, ``in [0.5, 2.0]``).
        explanation: One sentence with the numbers behind the status.
    """

    name: str
    status: str
    value: float | None
    threshold: str
    explanation: str

    @property
    def ok(self) -> bool | None:
        """True (pass), False (fail) or None (inconclusive or skipped)."""
        return {"pass": True, "fail": False}.get(self.status)


@dataclass
class CanaryVerdict:
    """The outcome of one analysis.

    Attributes:
        status: ``passed``, ``failed`` or ``inconclusive``.
        reason: One line for a tired engineer.
        checks: Every check, in order.
        stable: The stable window's numbers.
        canary: The canary window's numbers.
    """

    status: str
    reason: str
    checks: list[Check]
    stable: dict[str, Any]
    canary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; checks: {[c.name for c in self.checks]}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the audit log)."""
        return {
            "status": self.status,
            "reason": self.reason,
            "checks": [_json_safe(asdict(c)) for c in self.checks],
            "stable": self.stable,
            "canary": self.canary,
        }


def _json_safe(check: dict[str, Any]) -> dict[str, Any]:
    """An infinite value (e.g. alerts on the canary, none on stable) as the text ``inf``."""
    value = check["value"]
    if isinstance(value, float) and math.isinf(value):
        check["value"] = "inf" if value > 0 else "-inf"
    return check


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None if value is None or math.isnan(value) else value
    return round(value, digits)


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _pct(value: float) -> str:
    return f"{value:.2%}" if value < 0.1 else f"{value:.1%}"


def _below(stable: VersionWindow, canary: VersionWindow, attribute: str, minimum: int) -> str:
    """``v2 (canary) 40, v1 (stable) 12`` for the windows with less than ``minimum``."""
    return ", ".join(
        f"{w.version} ({role}) {getattr(w, attribute):,}"
        for role, w in (("canary", canary), ("stable", stable))
        if getattr(w, attribute) < minimum
    )


def _traffic(stable: VersionWindow, canary: VersionWindow, t: CanaryThresholds) -> Check:
    low = _below(stable, canary, "requests", t.min_requests)
    if low:
        return Check(
            "traffic",
            "inconclusive",
            float(canary.requests),
            f">= {t.min_requests} requests each",
            f"too few requests to judge: {low} (need {t.min_requests} each)",
        )
    return Check(
        "traffic",
        "pass",
        float(canary.requests),
        f">= {t.min_requests} requests each",
        f"canary {canary.requests:,} and stable {stable.requests:,} requests",
    )


def _at_most(name: str, value: float, limit: float, threshold: str, text: str) -> Check:
    """A check that passes when ``value <= limit``; ``{cmp}`` in ``text`` becomes ``<=``/``>``."""
    ok = value <= limit
    return Check(
        name,
        "pass" if ok else "fail",
        round(value, 6),
        threshold,
        text.replace("{cmp}", "<=" if ok else ">"),
    )


def _errors(stable: VersionWindow, canary: VersionWindow, t: CanaryThresholds) -> list[Check]:
    rate, base = canary.error_rate, stable.error_rate
    limit, delta_limit = f"<= {t.max_error_rate}", f"<= {t.max_error_rate_delta}"
    if rate is None:
        why = f"errors unknown ({canary.metrics.source or 'no metrics source'})"
        return [
            Check("error_rate", "skipped", None, limit, why),
            Check("error_rate_delta", "skipped", None, delta_limit, why),
        ]
    errors = canary.errors or 0
    detail = (
        f"{errors:,} of {max(canary.metrics.requests or 0, errors):,} canary requests failed "
        f"({canary.metrics.errors_5xx or 0} 5xx, {canary.metrics.errors_connection or 0} "
        "connection)"
    )
    checks = [
        _at_most(
            "error_rate",
            rate,
            t.max_error_rate,
            limit,
            f"{detail}: {_pct(rate)} {{cmp}} {_pct(t.max_error_rate)}",
        )
    ]
    if base is None:
        checks.append(Check("error_rate_delta", "skipped", None, delta_limit, "stable unknown"))
        return checks
    delta = rate - base
    checks.append(
        _at_most(
            "error_rate_delta",
            delta,
            t.max_error_rate_delta,
            delta_limit,
            f"canary error rate {_pct(rate)} vs stable {_pct(base)}: "
            f"{delta * 100:+.2f} points (allowed +{t.max_error_rate_delta * 100:.2f})",
        )
    )
    return checks


def _latency(stable: VersionWindow, canary: VersionWindow, t: CanaryThresholds) -> list[Check]:
    p99, base = canary.latency_p99_ms, stable.latency_p99_ms
    ceiling, ratio_limit = f"<= {t.max_latency_p99_ms} ms", f"<= {t.max_latency_p99_ratio}"
    if p99 is None:
        why = "canary latency unknown: no metrics and no logged latency"
        return [
            Check("latency_p99", "inconclusive", None, ceiling, why),
            Check("latency_p99_ratio", "skipped", None, ratio_limit, why),
        ]
    samples = {role: w.latency_samples for role, w in (("canary", canary), ("stable", stable))}
    if min(samples.values()) < t.min_latency_samples:
        why = (
            f"p99 {p99:.1f} ms from only {samples['canary']:,} canary and "
            f"{samples['stable']:,} stable requests: not judged below "
            f"{t.min_latency_samples} each (it would be the slowest single request)"
        )
        return [
            Check("latency_p99", "skipped", round(p99, 3), ceiling, why),
            Check("latency_p99_ratio", "skipped", None, ratio_limit, why),
        ]
    checks = [
        _at_most(
            "latency_p99",
            p99,
            t.max_latency_p99_ms,
            ceiling,
            f"canary p99 {p99:.1f} ms {{cmp}} {t.max_latency_p99_ms:g} ms",
        )
    ]
    if base is None or base <= 0:
        checks.append(
            Check("latency_p99_ratio", "skipped", None, ratio_limit, "stable latency unknown")
        )
    elif p99 < t.latency_ratio_min_ms:
        checks.append(
            Check(
                "latency_p99_ratio",
                "pass",
                round(p99 / base, 4),
                ratio_limit,
                f"canary p99 {p99:.1f} ms vs stable {base:.1f} ms: below "
                f"{t.latency_ratio_min_ms:g} ms, not compared",
            )
        )
    else:
        ratio = p99 / base
        checks.append(
            _at_most(
                "latency_p99_ratio",
                ratio,
                t.max_latency_p99_ratio,
                ratio_limit,
                f"canary p99 {p99:.1f} ms is {ratio:.2f}x stable's {base:.1f} ms "
                f"({{cmp}} {t.max_latency_p99_ratio:g}x)",
            )
        )
    return checks


def score_psi(stable_scores: np.ndarray, canary_scores: np.ndarray) -> float:
    """PSI of the canary's scores over the deciles of the stable scores (0: same)."""
    profile = build_profile(pd.DataFrame({"score": stable_scores}), ["score"], bins=SCORE_BINS)
    return population_stability_index(profile["columns"]["score"], pd.Series(canary_scores))


def psi_noise(n_canary: int, n_stable: int, z: float) -> float:
    """The PSI two samples of one distribution reach by chance with significance ``z``.

    PSI times the effective sample size ``n_c * n_s / (n_c + n_s)`` follows roughly a
    chi-square with ``bins - 1`` degrees of freedom; empty bins on small samples make the
    tail heavier, hence the factor 2 (checked by simulation down to 100 transactions a side).
    """
    from scipy.stats import chi2, norm

    effective = n_canary * n_stable / (n_canary + n_stable)
    return 2 * float(chi2.isf(2 * norm.sf(z), SCORE_BINS - 1)) / effective


def _too_few_logged(stable: VersionWindow, canary: VersionWindow, t: CanaryThresholds) -> str:
    low = _below(stable, canary, "transactions", t.min_transactions)
    return f"too few logged transactions: {low} (need {t.min_transactions} each)" if low else ""


def _scores(stable: VersionWindow, canary: VersionWindow, t: CanaryThresholds) -> list[Check]:
    psi_threshold = f"<= {t.max_score_psi}"
    band = f"in [{t.min_alert_rate_ratio}, {t.max_alert_rate_ratio}]"
    too_few = _too_few_logged(stable, canary, t)
    if too_few:
        return [
            Check("score_psi", "inconclusive", None, psi_threshold, too_few),
            Check("alert_rate_ratio", "inconclusive", None, band, too_few),
        ]
    psi = score_psi(stable.scores, canary.scores)
    noise = psi_noise(canary.transactions, stable.transactions, t.significance_z)
    means = f"mean score {canary.scores.mean():.4f} canary vs {stable.scores.mean():.4f} stable"
    if t.max_score_psi is None:  # measured and recorded, not a gate
        status, verdict = "skipped", "reported only: max_score_psi is off"
        psi_threshold = "off"
    elif psi <= t.max_score_psi:
        status, verdict = "pass", f"<= {t.max_score_psi:g}"
    elif psi > noise:
        status, verdict = "fail", f"> {t.max_score_psi:g}, chance level {noise:.3f}"
    else:
        status = "inconclusive"
        verdict = (
            f"> {t.max_score_psi:g} but could be chance: up to {noise:.3f} on "
            f"{canary.transactions:,}/{stable.transactions:,} transactions; more traffic needed"
        )
    checks = [
        Check(
            "score_psi",
            status,
            round(psi, 6),
            psi_threshold,
            f"score distributions differ by PSI {psi:.3f} ({verdict}); {means}",
        )
    ]
    n1, n2 = canary.transactions, stable.transactions
    a1, a2 = int(canary.alerts.sum()), int(stable.alerts.sum())
    p1, p2 = a1 / n1, a2 / n2
    rates = f"canary flags {_pct(p1)} ({a1:,}/{n1:,}), stable {_pct(p2)} ({a2:,}/{n2:,})"
    ratio = p1 / p2 if p2 else (1.0 if p1 == 0 else math.inf)
    pooled = (a1 + a2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p1 - p2) / se if se > 0 else 0.0
    inside = t.min_alert_rate_ratio <= ratio <= t.max_alert_rate_ratio
    ratio_text = "inf" if math.isinf(ratio) else f"{ratio:.2f}"
    if inside:
        status, verdict = "pass", f"ratio {ratio_text} within {band[3:]}"
    elif abs(z) >= t.significance_z:
        status, verdict = "fail", f"ratio {ratio_text} outside {band[3:]} (z = {z:+.1f})"
    else:
        status = "inconclusive"
        verdict = (
            f"ratio {ratio_text} outside {band[3:]} but could be chance (z = {z:+.1f}, "
            f"need |z| >= {t.significance_z:g}): more traffic needed"
        )
    checks.append(
        Check(
            "alert_rate_ratio",
            status,
            ratio if math.isinf(ratio) else round(ratio, 6),
            band,
            f"{rates}: {verdict}",
        )
    )
    return checks


def _precision_recall(labels: np.ndarray, alerts: np.ndarray) -> tuple[int, int, float, float]:
    labelled = np.isfinite(labels)
    y = labels[labelled] == 1
    flagged = alerts[labelled]
    tp = int((y & flagged).sum())
    precision = tp / flagged.sum() if flagged.sum() else math.nan
    recall = tp / y.sum() if y.sum() else math.nan
    return int(labelled.sum()), int(y.sum()), precision, recall


def _labels(stable: VersionWindow, canary: VersionWindow, t: CanaryThresholds) -> list[Check]:
    thresholds = {
        "precision_ratio": f">= {t.min_precision_ratio}",
        "recall_ratio": f">= {t.min_recall_ratio}",
    }
    if canary.labels is None or stable.labels is None:
        return [
            Check(n, "skipped", None, th, "no labels for this window")
            for n, th in thresholds.items()
        ]
    n_c, frauds_c, precision_c, recall_c = _precision_recall(canary.labels, canary.alerts)
    n_s, frauds_s, precision_s, recall_s = _precision_recall(stable.labels, stable.alerts)
    if n_c < t.min_labelled or frauds_c < t.min_labelled_frauds or frauds_s < 1:
        why = (
            f"labels so far: canary {n_c:,} labelled with {frauds_c} frauds, stable {n_s:,} with "
            f"{frauds_s} (judged from {t.min_labelled} labelled and {t.min_labelled_frauds} "
            "frauds on the canary)"
        )
        return [Check(n, "skipped", None, th, why) for n, th in thresholds.items()]
    checks = []
    for name, canary_value, stable_value, minimum in (
        ("precision_ratio", precision_c, precision_s, t.min_precision_ratio),
        ("recall_ratio", recall_c, recall_s, t.min_recall_ratio),
    ):
        metric = name.removesuffix("_ratio")
        # nothing to lose against an undefined or zero stable value; an undefined canary
        # precision (no alerts) is caught by recall and the alert-rate check
        if math.isnan(stable_value) or stable_value == 0 or math.isnan(canary_value):
            ratio = 1.0
        else:
            ratio = canary_value / stable_value
        ok = ratio >= minimum
        checks.append(
            Check(
                name,
                "pass" if ok else "fail",
                round(ratio, 6),
                thresholds[name],
                f"canary {metric} {_num(canary_value)} vs stable {_num(stable_value)} on "
                f"{n_c:,}/{n_s:,} labelled transactions: ratio {ratio:.2f} "
                f"({'>=' if ok else '<'} {minimum:g})",
            )
        )
    return checks


def analyse(
    stable: VersionWindow, canary: VersionWindow, thresholds: CanaryThresholds | None = None
) -> CanaryVerdict:
    """Compare the canary with the stable version on the same window.

    Args:
        stable: The stable version's window.
        canary: The canary's window.
        thresholds: The limits (default :class:`CanaryThresholds`).

    Returns:
        The verdict with every check; ``failed`` if any check failed, ``inconclusive`` if any
        could not be judged for lack of data, else ``passed``.
    """
    t = thresholds or CanaryThresholds()
    checks = [
        _traffic(stable, canary, t),
        *_errors(stable, canary, t),
        *_latency(stable, canary, t),
        *_scores(stable, canary, t),
        *_labels(stable, canary, t),
    ]
    failed = [c for c in checks if c.status == "fail"]
    unsure = [c for c in checks if c.status == "inconclusive"]
    judged = [c for c in checks if c.status == "pass"]
    who = f"canary {canary.version} vs stable {stable.version}"
    if failed:
        status = "failed"
        reason = f"{who} FAILED {', '.join(c.name for c in failed)}: " + "; ".join(
            c.explanation for c in failed
        )
    elif unsure:
        status = "inconclusive"
        reason = f"{who} not judged yet: " + "; ".join(dict.fromkeys(c.explanation for c in unsure))
    else:
        status = "passed"
        reason = (
            f"{who} passed {len(judged)} checks on {canary.requests:,} canary and "
            f"{stable.requests:,} stable requests"
        )
        skipped = [c.name for c in checks if c.status == "skipped"]
        if skipped:
            reason += f" (not judged: {', '.join(skipped)})"
    return CanaryVerdict(status, reason, checks, stable.summary(), canary.summary())


def window_from_frame(
    frame: pd.DataFrame,
    version: str,
    metrics: VersionMetrics | None = None,
    labels: pd.DataFrame | None = None,
) -> VersionWindow:
    """A version's window from inference-log rows (``score``, ``decision``, ``latency_ms``,
    ``tx.transaction_id``) and, optionally, its metrics and the labels received so far.

    Args:
        frame: Inference-log rows of this version in the window.
        version: The version.
        metrics: Counts, errors and latency from the metrics source.
        labels: ``transaction_id``, ``is_fraud`` (as :func:`monitoring.labels.load_labels`).
    """
    scores = pd.to_numeric(frame["score"], errors="coerce").to_numpy(np.float64)
    alerts = (frame["decision"].astype(str) == "alert").to_numpy() if len(frame) else np.zeros(0)
    latency = (
        pd.to_numeric(frame["latency_ms"], errors="coerce").to_numpy(np.float64)
        if "latency_ms" in frame
        else np.full(len(frame), np.nan)
    )
    known = None
    if labels is not None and len(labels) and "tx.transaction_id" in frame:
        index = pd.Index(labels["transaction_id"].astype(str))
        position = index.get_indexer(frame["tx.transaction_id"].astype(str))
        values = labels["is_fraud"].to_numpy(np.float64)
        known = np.where(position >= 0, values[np.maximum(position, 0)], np.nan)
    elif labels is not None:
        known = np.full(len(frame), np.nan)
    return VersionWindow(
        version=version,
        scores=scores,
        alerts=alerts.astype(bool),
        latency_ms=latency,
        metrics=metrics or VersionMetrics(source="inference log only"),
        labels=known,
    )


def read_windows(
    store: ObjectStore,
    model: str,
    stable_version: str,
    canary_version: str,
    start: datetime,
    end: datetime,
    metrics: dict[str, VersionMetrics] | None = None,
    labels: pd.DataFrame | None = None,
) -> tuple[VersionWindow, VersionWindow]:
    """Read both versions' logged traffic of ``[start, end)`` and build their windows.

    Args:
        store: The store holding the inference log.
        model: Model name.
        stable_version: The stable version.
        canary_version: The canary version.
        start: Window start (UTC).
        end: Window end (UTC).
        metrics: ``{"stable": ..., "canary": ...}`` from the metrics source.
        labels: Labels received so far (``transaction_id``, ``is_fraud``), or None.

    Returns:
        ``(stable, canary)``.
    """
    from components.inference_log import read_frame

    metrics = metrics or {}
    windows = []
    for role, version in (("stable", stable_version), ("canary", canary_version)):
        frame = read_frame(store, model, version, start, end, columns=LOG_COLUMNS)
        for column in LOG_COLUMNS:
            if column not in frame:
                frame[column] = pd.Series(dtype="float64" if column != "decision" else "object")
        windows.append(window_from_frame(frame, version, metrics.get(role), labels))
    return windows[0], windows[1]
