"""Canary analysis: each check, the verdict, thresholds from YAML, windows from the log."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from components.inference_log import make_record, write_batch
from components.store import open_store
from monitoring.canary import (
    CanaryConfigError,
    CanaryThresholds,
    VersionMetrics,
    VersionWindow,
    analyse,
    load_thresholds,
    psi_noise,
    read_windows,
    score_psi,
    window_from_frame,
)

THRESHOLD = 0.2  # decision threshold of the simulated models


def window(
    version: str,
    n: int = 2_000,
    seed: int = 0,
    scores: np.ndarray | None = None,
    requests: int | None = None,
    errors_5xx: int = 0,
    errors_connection: int = 0,
    p99: float | None = 4.0,
    labels: np.ndarray | None = None,
) -> VersionWindow:
    """A version's window: beta(1, 15) scores (about 3.5% alerts) unless given."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(1, 15, n) if scores is None else scores
    return VersionWindow(
        version=version,
        scores=scores,
        alerts=scores >= THRESHOLD,
        latency_ms=rng.lognormal(1.0, 0.3, len(scores)),
        metrics=VersionMetrics(
            requests=len(scores) if requests is None else requests,
            errors_5xx=errors_5xx,
            errors_connection=errors_connection,
            client_errors_4xx=0,
            latency_p50_ms=2.0,
            latency_p99_ms=p99,
            source="test",
        ),
        labels=labels,
    )


def statuses(verdict) -> dict[str, str]:
    return {c.name: c.status for c in verdict.checks}


def test_same_model_on_same_traffic_passes_every_check():
    verdict = analyse(window("v1", 20_000, seed=1), window("v2", 2_000, seed=2))
    assert verdict.status == "passed", verdict.reason
    assert statuses(verdict) == {
        "traffic": "pass",
        "error_rate": "pass",
        "error_rate_delta": "pass",
        "latency_p99": "pass",
        "latency_p99_ratio": "pass",
        "score_psi": "pass",
        "alert_rate_ratio": "pass",
        "precision_ratio": "skipped",
        "recall_ratio": "skipped",
    }
    assert verdict.check("score_psi").value < 0.02
    assert 0.7 < verdict.check("alert_rate_ratio").value < 1.4
    assert verdict.reason.startswith("canary v2 vs stable v1 passed 7 checks on 2,000 canary")
    assert verdict.reason.endswith("(not judged: precision_ratio, recall_ratio)")
    assert verdict.canary["transactions"] == 2_000 and verdict.stable["requests"] == 20_000


def test_a_canary_that_flags_almost_everything_fails_on_scores_and_alert_rate():
    rng = np.random.default_rng(3)
    verdict = analyse(window("v1", 5_000), window("v3", scores=rng.beta(8, 2, 500)))
    assert verdict.status == "failed"
    failed = [c.name for c in verdict.checks if c.status == "fail"]
    assert failed == ["score_psi", "alert_rate_ratio"]
    ratio = verdict.check("alert_rate_ratio")
    assert ratio.value > 20  # ~100% vs ~3.5%
    assert "canary flags" in ratio.explanation and "outside [0.5, 2.0]" in ratio.explanation
    assert verdict.check("score_psi").value > 5
    assert verdict.reason.startswith("canary v3 vs stable v1 FAILED score_psi, alert_rate_ratio: ")


def test_error_rate_counts_5xx_and_connection_errors_against_both_limits():
    stable = window("v1", 2_000)
    canary = window("v2", 400, requests=400, errors_5xx=6, errors_connection=4)
    verdict = analyse(stable, canary)
    rate = verdict.check("error_rate")
    assert rate.value == pytest.approx(10 / 400)
    assert rate.status == "fail"  # 2.5% > 2%
    assert "10 of 400 canary requests failed (6 5xx, 4 connection)" in rate.explanation
    delta = verdict.check("error_rate_delta")
    assert delta.value == pytest.approx(0.025) and delta.status == "fail"
    # 1% on the canary, 0.5% on stable: within both limits
    verdict = analyse(
        window("v1", 2_000, requests=2_000, errors_5xx=10),
        window("v2", 400, requests=400, errors_5xx=4),
    )
    assert verdict.check("error_rate").status == "pass"
    assert verdict.check("error_rate_delta").value == pytest.approx(0.005)
    assert verdict.status == "passed"


def test_a_canary_that_answers_only_errors_fails_although_nothing_was_logged():
    canary = window("v3", scores=np.empty(0), requests=300, errors_5xx=300, p99=None)
    verdict = analyse(window("v1", 3_000), canary)
    assert verdict.status == "failed"
    assert verdict.check("error_rate").value == 1.0
    assert verdict.check("score_psi").status == "inconclusive"  # no scores, but errors decide
    assert "FAILED error_rate, error_rate_delta" in verdict.reason


def test_latency_absolute_ceiling_and_ratio_above_the_noise_floor():
    t = CanaryThresholds()
    verdict = analyse(window("v1", p99=40.0), window("v2", p99=90.0), t)
    ratio = verdict.check("latency_p99_ratio")
    assert ratio.status == "fail" and ratio.value == pytest.approx(2.25)
    assert "2.25x stable's 40.0 ms" in ratio.explanation
    assert verdict.check("latency_p99").status == "pass"
    # below latency_ratio_min_ms the ratio is noise: 3 ms vs 12 ms is not judged
    verdict = analyse(window("v1", p99=3.0), window("v2", p99=12.0), t)
    assert verdict.check("latency_p99_ratio").status == "pass"
    assert "not compared" in verdict.check("latency_p99_ratio").explanation
    # the absolute ceiling applies whatever stable does
    verdict = analyse(window("v1", p99=300.0), window("v2", p99=300.0), t)
    assert verdict.check("latency_p99").status == "fail"
    assert verdict.check("latency_p99_ratio").status == "pass"


def test_latency_is_not_judged_on_a_handful_of_requests():
    # the p99 of 30 requests is the slowest one, e.g. the cold canary's first request
    verdict = analyse(window("v1", 3_000, p99=20.0), window("v2", 30, p99=400.0))
    assert verdict.check("latency_p99").status == "skipped"
    assert verdict.check("latency_p99").value == 400.0
    assert "from only 30 canary and 3,000 stable requests: not judged below 200" in (
        verdict.check("latency_p99_ratio").explanation
    )
    t = CanaryThresholds(min_requests=10, min_transactions=10, min_latency_samples=30)
    assert analyse(window("v1", 3_000, p99=20.0), window("v2", 30, p99=400.0), t).failed


def test_latency_falls_back_to_the_logged_latency_without_metrics():
    canary = window("v2", 1_000, p99=None)
    expected = float(np.quantile(canary.latency_ms, 0.99))
    assert canary.latency_p99_ms == pytest.approx(expected)
    verdict = analyse(window("v1", 2_000, p99=None), canary)
    assert verdict.check("latency_p99").value == pytest.approx(expected, abs=1e-3)


def test_too_little_traffic_is_inconclusive_and_says_how_much_is_needed():
    verdict = analyse(window("v1", 5_000), window("v2", 40))
    assert verdict.status == "inconclusive"
    assert verdict.check("traffic").status == "inconclusive"
    assert "v2 (canary) 40 (need 100 each)" in verdict.reason
    assert verdict.check("score_psi").status == "inconclusive"


def test_alert_rate_outside_the_band_by_chance_is_inconclusive_not_failed():
    # 6 alerts of 100 on the canary vs 2% on stable: ratio 3, but z is about 2.6 < 3
    stable_scores = np.r_[np.full(200, 0.5), np.full(9_800, 0.01)]
    canary_scores = np.r_[np.full(6, 0.5), np.full(94, 0.01)]
    t = CanaryThresholds(max_score_psi=10)
    verdict = analyse(window("v1", scores=stable_scores), window("v2", scores=canary_scores), t)
    check = verdict.check("alert_rate_ratio")
    assert check.value == pytest.approx(3.0)
    assert check.status == "inconclusive"
    assert "could be chance" in check.explanation
    assert verdict.status == "inconclusive"
    # the same ratio on ten times the traffic is significant
    canary_scores = np.r_[np.full(60, 0.5), np.full(940, 0.01)]
    verdict = analyse(window("v1", scores=stable_scores), window("v2", scores=canary_scores), t)
    assert verdict.check("alert_rate_ratio").status == "fail"
    # a canary that flags nothing when stable flags 2% collapses the ratio
    canary_scores = np.full(2_000, 0.01)
    verdict = analyse(window("v1", scores=stable_scores), window("v2", scores=canary_scores), t)
    assert verdict.check("alert_rate_ratio").value == 0.0
    assert verdict.check("alert_rate_ratio").status == "fail"


def test_alerts_only_on_the_canary_is_an_infinite_ratio_written_as_text():
    stable = window("v1", scores=np.full(3_000, 0.01))
    canary = window("v2", scores=np.r_[np.full(50, 0.5), np.full(250, 0.01)])
    verdict = analyse(stable, canary, CanaryThresholds(max_score_psi=100))
    assert verdict.check("alert_rate_ratio").value == math.inf
    assert verdict.check("alert_rate_ratio").status == "fail"
    checks = {c["name"]: c for c in verdict.as_dict()["checks"]}
    assert checks["alert_rate_ratio"]["value"] == "inf"
    json.dumps(verdict.as_dict(), allow_nan=False)  # strict JSON for the audit log


def test_no_alerts_on_either_side_is_a_ratio_of_one():
    scores = np.full(500, 0.01)
    verdict = analyse(window("v1", scores=scores), window("v2", scores=scores.copy()))
    assert verdict.check("alert_rate_ratio").value == 1.0
    assert verdict.check("alert_rate_ratio").status == "pass"


def test_a_score_shift_on_a_small_window_is_inconclusive_until_the_evidence_decides():
    rng = np.random.default_rng(11)
    t = CanaryThresholds(max_alert_rate_ratio=100, significance_z=3.0)
    small = analyse(
        window("v1", scores=rng.beta(1, 15, 150)), window("v2", scores=rng.beta(1, 7, 150)), t
    )
    check = small.check("score_psi")
    assert 0.25 < check.value < psi_noise(150, 150, 3.0) == pytest.approx(0.6735, abs=1e-4)
    assert check.status == "inconclusive"
    assert "could be chance: up to 0.674 on 150/150 transactions" in check.explanation
    large = analyse(
        window("v1", scores=rng.beta(1, 15, 3_000)), window("v2", scores=rng.beta(1, 7, 3_000)), t
    )
    assert large.check("score_psi").status == "fail"
    assert large.check("score_psi").value > 0.4
    assert "chance level 0.034" in large.check("score_psi").explanation


def test_psi_noise_bounds_the_psi_of_samples_from_one_distribution():
    rng = np.random.default_rng(0)
    for n_canary, n_stable in ((100, 100), (100, 900), (1_000, 9_000)):
        noise = psi_noise(n_canary, n_stable, 3.0)
        psis = [score_psi(rng.beta(1, 15, n_stable), rng.beta(1, 15, n_canary)) for _ in range(300)]
        assert np.mean(np.array(psis) > noise) <= 0.01, (n_canary, n_stable)
    # about chi-square(9) at z=3 (25.3), doubled, over the effective size
    effective = 2_000 * 20_000 / 22_000
    assert psi_noise(2_000, 20_000, 3.0) == pytest.approx(2 * 25.26 / effective, rel=1e-3)


def test_score_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(5)
    same = score_psi(rng.beta(1, 15, 50_000), rng.beta(1, 15, 50_000))
    shifted = score_psi(rng.beta(1, 15, 50_000), rng.beta(1, 8, 50_000))
    assert same < 0.005
    assert shifted > 0.25


def labelled(alerts_fraud: int, alerts_genuine: int, missed: int, quiet: int) -> tuple:
    """Scores and labels: alerted frauds, false alerts, missed frauds, quiet genuine ones."""
    scores = np.r_[
        np.full(alerts_fraud, 0.9),
        np.full(alerts_genuine, 0.5),
        np.full(missed, 0.05),
        np.full(quiet, 0.01),
    ]
    labels = np.r_[
        np.ones(alerts_fraud), np.zeros(alerts_genuine), np.ones(missed), np.zeros(quiet)
    ]
    return scores, labels


def test_precision_and_recall_are_compared_once_enough_labels_arrived():
    t = CanaryThresholds(max_score_psi=10, min_labelled=200, min_labelled_frauds=20)
    s_scores, s_labels = labelled(80, 20, 20, 1_880)  # precision 0.8, recall 0.8
    c_scores, c_labels = labelled(15, 25, 15, 245)  # precision 0.375, recall 0.5
    verdict = analyse(
        window("v1", scores=s_scores, labels=s_labels),
        window("v2", scores=c_scores, labels=c_labels),
        t,
    )
    precision, recall = verdict.check("precision_ratio"), verdict.check("recall_ratio")
    assert precision.value == pytest.approx(0.375 / 0.8)
    assert recall.value == pytest.approx(0.5 / 0.8)
    assert precision.status == recall.status == "fail"
    assert "canary precision 0.375 vs stable 0.800 on 300/2,000 labelled" in precision.explanation
    # unlabelled transactions (NaN) do not count; too few labelled canary frauds: skipped
    c_labels_partial = c_labels.copy()
    c_labels_partial[:10] = np.nan
    verdict = analyse(
        window("v1", scores=s_scores, labels=s_labels),
        window("v2", scores=c_scores, labels=c_labels_partial),
        CanaryThresholds(max_score_psi=10, min_labelled_frauds=25),
    )
    assert verdict.check("recall_ratio").status == "skipped"
    assert "canary 290 labelled with 20 frauds" in verdict.check("recall_ratio").explanation


def test_thresholds_from_yaml_flat_or_nested_with_overrides(tmp_path):
    flat = tmp_path / "t.yaml"
    flat.write_text("max_score_psi: 0.4\nmin_requests: 20\n")
    t = load_thresholds(flat, max_error_rate=0.05)
    assert (t.max_score_psi, t.min_requests, t.max_error_rate) == (0.4, 20, 0.05)
    assert t.max_latency_p99_ms == CanaryThresholds().max_latency_p99_ms
    nested = tmp_path / "n.yaml"
    nested.write_text("thresholds:\n  min_alert_rate_ratio: 0.25\n")
    assert load_thresholds(nested).min_alert_rate_ratio == 0.25
    assert load_thresholds(None) == CanaryThresholds()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("max_psi: 0.3\n", r"unknown threshold\(s\) max_psi; known: .*max_score_psi"),
        ("max_score_psi: high\n", r"max_score_psi is 'high'; use a number \(default 0.25\)"),
        ("- 1\n- 2\n", "expected a mapping of threshold names"),
        ("max_error_rate: 2\n", r"max_error_rate is 2: use a share between 0 and 1"),
        ("min_requests: 0\n", "min_requests is 0: use a whole number >= 1"),
        ("min_alert_rate_ratio: 1.5\n", r"alert-rate band \[1.5, 2.0\] must contain 1"),
        ("max_score_psi: [\n", "cannot read the thresholds"),
    ],
)
def test_bad_threshold_files_name_the_problem(tmp_path, text, match):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(CanaryConfigError, match=match):
        load_thresholds(path)


def test_window_from_frame_joins_labels_by_transaction_id():
    frame = pd.DataFrame(
        {
            "score": [0.9, 0.1, 0.3],
            "decision": pd.Categorical(["alert", "pass", "alert"]),
            "latency_ms": [1.0, None, 3.0],
            "tx.transaction_id": pd.Categorical(["a", "b", "c"]),
        }
    )
    labels = pd.DataFrame({"transaction_id": ["c", "a", "z"], "is_fraud": [0, 1, 1]})
    w = window_from_frame(frame, "v2", labels=labels)
    assert w.alerts.tolist() == [True, False, True]
    assert w.labels[0] == 1 and math.isnan(w.labels[1]) and w.labels[2] == 0
    assert np.isnan(w.latency_ms[1])
    assert w.metrics.source == "inference log only"
    assert w.requests == 3  # no metrics: the logged transactions
    assert w.errors is None and w.error_rate is None
    assert window_from_frame(frame, "v2").labels is None


def test_without_error_metrics_the_error_checks_are_skipped_and_say_why():
    stable = window_from_frame(
        pd.DataFrame({"score": np.full(300, 0.01), "decision": "pass", "latency_ms": 2.0}), "v1"
    )
    canary = window_from_frame(
        pd.DataFrame({"score": np.full(300, 0.01), "decision": "pass", "latency_ms": 2.5}), "v2"
    )
    verdict = analyse(stable, canary)
    assert verdict.status == "passed"
    assert verdict.check("error_rate").status == "skipped"
    assert "errors unknown (inference log only)" in verdict.check("error_rate").explanation
    assert "(not judged: error_rate, error_rate_delta, precision_ratio" in verdict.reason


def test_read_windows_reads_both_versions_within_the_window_only(tmp_path):
    store = open_store(str(tmp_path / "store"))
    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    records = []
    for i in range(600):
        version = "v2" if i % 3 == 0 else "v1"
        records.append(
            make_record(
                model="fraud",
                version=version,
                transaction={"transaction_id": f"t{i}", "amount": 10.0},
                score=0.9 if i % 50 == 0 else 0.01,
                decision="alert" if i % 50 == 0 else "pass",
                latency_ms=2.0,
                time=t0 + timedelta(seconds=i),
            )
        )
    write_batch(store, records)
    labels = pd.DataFrame({"transaction_id": ["t0", "t3"], "is_fraud": [1, 0]})
    stable, canary = read_windows(
        store,
        "fraud",
        "v1",
        "v2",
        t0 + timedelta(seconds=100),
        t0 + timedelta(seconds=400),
        {"stable": VersionMetrics(requests=200, source="m")},
        labels,
    )
    assert (stable.version, canary.version) == ("v1", "v2")
    assert stable.transactions == 200 and canary.transactions == 100  # 300 s, 1/3 canary
    assert stable.metrics.requests == 200 and canary.metrics.source == "inference log only"
    assert canary.alerts.sum() == 2  # t150, t300
    assert np.isfinite(canary.labels).sum() == 0  # t0 and t3 are before the window
    empty_stable, empty_canary = read_windows(
        store, "fraud", "v1", "v9", t0, t0 + timedelta(seconds=10)
    )
    assert empty_canary.transactions == 0 and empty_stable.transactions == 6


def test_score_psi_can_be_recorded_without_gating(tmp_path):
    rng = np.random.default_rng(3)
    stable = window("v1", scores=rng.beta(1, 15, 2000))
    canary = window("v2", scores=rng.beta(1, 15, 2000) ** 0.5)  # same ranking, shifted scores
    off = analyse(stable, canary, CanaryThresholds(max_score_psi=None)).check("score_psi")
    assert off.status == "skipped" and off.value > 1.0 and off.threshold == "off"
    assert analyse(stable, canary, CanaryThresholds()).check("score_psi").status == "fail"
    config = tmp_path / "thresholds.yaml"
    config.write_text("max_score_psi: null\n")
    assert load_thresholds(config).max_score_psi is None
