"""Feature correctness: point-in-time windows, no leakage, same values however computed."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.features import FeatureSpec, compute_features
from components.generator import GeneratorConfig, generate_transactions

SPEC = FeatureSpec()
T0 = pd.Timestamp("2026-04-01T00:00:00Z")


def tx(rows):
    """Frame from (customer, terminal, time offset, amount, is_fraud) tuples."""
    frame = pd.DataFrame(
        rows, columns=["customer_id", "terminal_id", "offset", "amount", "is_fraud"]
    )
    frame["timestamp"] = T0 + pd.to_timedelta(frame.pop("offset"))
    frame["transaction_id"] = [f"t{i}" for i in range(len(frame))]
    return frame


def reference(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Brute force, one row at a time: what the windowed features mean."""
    out = []
    day = pd.Timedelta(days=1)
    delay = pd.Timedelta(days=spec.label_delay_days)
    for _, row in frame.iterrows():
        t = row["timestamp"]
        same_c = frame[(frame["customer_id"] == row["customer_id"]) & (frame["timestamp"] < t)]
        same_t = frame[(frame["terminal_id"] == row["terminal_id"]) & (frame["timestamp"] < t)]
        r = {}
        for w in spec.customer_windows_days:
            win = same_c[same_c["timestamp"] >= t - w * day]
            r[f"customer_count_{w}d"] = len(win)
            r[f"customer_sum_{w}d"] = win["amount"].sum()
            r[f"customer_mean_{w}d"] = win["amount"].mean() if len(win) else np.nan
        r["customer_seconds_since_previous"] = (
            (t - same_c["timestamp"].max()).total_seconds() if len(same_c) else np.nan
        )
        usual = r[f"customer_mean_{max(spec.customer_windows_days)}d"]
        r["amount_vs_customer_mean"] = row["amount"] / usual if usual > 0 else np.nan
        for w in spec.terminal_windows_days:
            r[f"terminal_count_{w}d"] = (same_t["timestamp"] >= t - w * day).sum()
            known = same_t[
                (same_t["timestamp"] >= t - delay - w * day) & (same_t["timestamp"] < t - delay)
            ]
            r[f"terminal_fraud_rate_{w}d"] = known["is_fraud"].mean() if len(known) else 0.0
        out.append(r)
    return pd.DataFrame(out, index=frame.index)


def test_windowed_features_match_a_brute_force_reference():
    rng = np.random.default_rng(3)
    n = 400
    offsets = rng.integers(0, 50 * 86400, n)
    offsets[::10] = offsets[1::10][: len(offsets[::10])]  # plenty of ties at the same second
    frame = tx(
        list(
            zip(
                rng.choice(["a", "b", "c", "d", "e"], n),
                rng.choice(["T1", "T2", "T3", "T4"], n),
                pd.to_timedelta(offsets, unit="s"),
                rng.gamma(2, 30, n).round(2),
                (rng.random(n) < 0.2).astype(int),
                strict=True,
            )
        )
    ).sort_values("timestamp", kind="stable")
    frame = frame.sample(frac=1, random_state=1)  # input order must not matter
    got = compute_features(frame, SPEC)
    want = reference(frame, SPEC)
    for column in want.columns:
        np.testing.assert_allclose(
            got[column].to_numpy(dtype=float),
            want[column].to_numpy(dtype=float),
            rtol=1e-5,
            atol=1e-3,
            err_msg=column,
        )


def test_transaction_itself_and_simultaneous_ones_are_excluded():
    frame = tx(
        [
            ("a", "T", "0h", 10.0, 0),
            ("a", "T", "1h", 1000.0, 0),
            ("a", "T", "1h", 2000.0, 0),  # same second as the previous one
            ("a", "T", "49h", 30.0, 0),
        ]
    )
    f = compute_features(frame, SPEC)
    assert f["customer_count_1d"].tolist() == [0, 1, 1, 0]
    assert f["customer_sum_1d"].tolist() == [0, 10, 10, 0]
    assert f["customer_count_7d"].tolist() == [0, 1, 1, 3]
    assert f["customer_sum_7d"].iloc[3] == 3010
    assert np.isnan(f["customer_seconds_since_previous"].iloc[0])
    assert f["customer_seconds_since_previous"].iloc[1] == 3600
    assert f["terminal_count_1d"].tolist() == [0, 1, 1, 0]


def test_later_transactions_never_change_earlier_features(small_frame):
    cut = small_frame["timestamp"].min() + pd.Timedelta(days=20)
    full = compute_features(small_frame, SPEC)
    early = small_frame[small_frame["timestamp"] < cut]
    prefix = compute_features(early, SPEC)
    pd.testing.assert_frame_equal(full.loc[early.index], prefix)


def test_labels_younger_than_the_delay_are_not_used():
    fraud_at_day0 = [("x", "T", "0h", 10.0, 1)]
    probe = [("y", "T", f"{h}h", 10.0, 0) for h in (6 * 24 + 23, 7 * 24 + 1)]
    f = compute_features(tx(fraud_at_day0 + probe), SPEC)
    # at 6d23h the label is younger than 7 days: unknown; at 7d1h it is known
    assert f["terminal_fraud_rate_1d"].tolist() == [0.0, 0.0, 1.0]
    assert f["terminal_fraud_rate_30d"].tolist() == [0.0, 0.0, 1.0]
    # ... but the transaction itself was seen (volume needs no label)
    assert f["terminal_count_7d"].tolist() == [0, 1, 1]


def test_flipping_recent_labels_changes_no_feature(small_frame):
    frame = small_frame.copy()
    last = frame["timestamp"] >= frame["timestamp"].max() - pd.Timedelta(days=SPEC.label_delay_days)
    before = compute_features(frame, SPEC)
    frame.loc[last, "is_fraud"] = 1 - frame.loc[last, "is_fraud"]
    after = compute_features(frame, SPEC)
    pd.testing.assert_frame_equal(before.loc[last], after.loc[last])
    # older labels do matter, which is the point of the feature
    frame.loc[:, "is_fraud"] = 1 - small_frame["is_fraud"]
    assert not compute_features(frame, SPEC).loc[last].equals(before.loc[last])


def test_history_argument_gives_the_same_features_as_one_frame(small_frame):
    cut = small_frame["timestamp"].min() + pd.Timedelta(days=25)
    history, recent = (
        small_frame[small_frame["timestamp"] < cut],
        small_frame[small_frame["timestamp"] >= cut],
    )
    together = compute_features(small_frame, SPEC).loc[recent.index]
    apart = compute_features(recent, SPEC, history=history)
    pd.testing.assert_frame_equal(together, apart)


def test_stateless_features_and_unknown_categories():
    frame = tx([("a", "T", "23h30min", 99.0, 0), ("a", "T", "5d12h", 1.0, 0)])
    frame["channel"] = ["mobile", "carrier-pigeon"]
    frame["account_balance"] = [198.0, 0.0]
    f = compute_features(frame, SPEC)
    assert f["hour"].tolist() == [23, 12]
    assert f["is_night"].tolist() == [1, 0]
    assert f["is_weekend"].tolist() == [0, 0]  # 2026-04-01 is a Wednesday; +5d is a Monday
    assert f["channel=mobile"].tolist() == [1, 0]
    assert f["channel=other"].tolist() == [0, 1]
    assert f["amount_to_balance"].iloc[0] == pytest.approx(0.5)
    assert np.isnan(f["amount_to_balance"].iloc[1])  # no division by a zero balance
    assert f["log_amount"].iloc[0] == pytest.approx(np.log1p(99.0))
    assert list(f.columns) == SPEC.feature_names()


def test_spec_round_trips_through_json():
    spec = FeatureSpec(label_delay_days=3, extra_numeric=("V1", "V2"))
    assert FeatureSpec.from_json(spec.to_json()) == spec
    newer = spec.to_json().replace('"version": 1', '"version": 99')
    with pytest.raises(ValueError, match="newer than this fraudops understands"):
        FeatureSpec.from_json(newer)


def test_a_reduced_spec_gives_the_same_values_for_what_it_keeps(small_frame):
    from dataclasses import replace

    reduced = replace(SPEC, customer_windows_days=(30,), terminal_windows_days=())
    full = compute_features(small_frame, SPEC)
    part = compute_features(small_frame, reduced)
    shared = [c for c in reduced.feature_names() if c in full.columns]
    assert "amount_vs_customer_mean" in shared and "terminal_fraud_rate_7d" not in part
    pd.testing.assert_frame_equal(full[shared], part[shared])


def test_too_many_entities_for_64_bit_keys_is_a_clear_error():
    from components.features.windows import window_values

    one, ms = np.zeros(1, np.int64), np.ones(1, np.int64)
    huge = np.array([2**61], np.int64)  # entity codes times the span would overflow int64
    with pytest.raises(OverflowError, match="too many entities for the time span"):
        window_values(
            huge, one, np.ones(1), one, one, np.zeros(1), huge, one, one, np.ones(1), ms, ms, 1, 10
        )


def test_windows_when_both_tables_are_large_enough_to_sort_queries():
    # above SORT_QUERIES_FROM the kernel visits queries in key order: same values as a few
    from components.features.windows import SORT_QUERIES_FROM

    spec = FeatureSpec()
    frame = generate_transactions(
        GeneratorConfig(n_customers=40, n_terminals=30, n_days=20, seed=4)
    )
    assert len(frame) > SORT_QUERIES_FROM
    whole = compute_features(frame, spec)
    head = frame.iloc[:-3]
    tail = compute_features(frame.iloc[-3:], spec, history=head)
    pd.testing.assert_frame_equal(whole.iloc[-3:], tail, check_exact=True)


@given(
    head=st.lists(st.integers(0, 40), max_size=300),
    tail=st.lists(st.integers(0, 40), max_size=300),
)
@settings(max_examples=200, deadline=None)
def test_stable_order_is_a_stable_argsort(head, tail):
    # the kernel's sort: a sorted head (an entity's rows from the state) and any tail
    from components.features.windows import _stable_order

    keys = np.array(sorted(head) + tail, dtype=np.int64)
    np.testing.assert_array_equal(_stable_order(keys), np.argsort(keys, kind="stable"))


@given(
    keys=st.lists(st.integers(-5, 2**50), max_size=400),
    repeat=st.integers(1, 30),
)
@settings(max_examples=100, deadline=None)
def test_radix_order_is_a_stable_argsort(keys, repeat):
    from components.features.windows import _radix_order

    values = np.array(keys * repeat, dtype=np.int64)  # many equal keys: stability matters
    np.testing.assert_array_equal(_radix_order(values), np.argsort(values, kind="stable"))
