import numpy as np
import pandas as pd
import pytest

from components.generator import (
    SCENARIOS,
    GeneratorConfig,
    drift_period,
    generate_portfolio,
    generate_transactions,
)
from components.schema import FIELDS


def test_same_seed_same_data_and_other_seed_other_data(small_config, small_frame):
    again = generate_transactions(small_config)
    pd.testing.assert_frame_equal(small_frame, again)
    other = generate_transactions(GeneratorConfig(**{**small_config.__dict__, "seed": 12}))
    assert len(other) != len(small_frame) or not other["amount"].equals(small_frame["amount"])


def test_has_every_canonical_column_with_sane_values(small_config, small_frame):
    assert [f.name for f in FIELDS] == list(small_frame.columns)
    assert small_frame["transaction_id"].is_unique
    assert small_frame["timestamp"].is_monotonic_increasing
    start = pd.Timestamp(small_config.start_date, tz="UTC")
    assert small_frame["timestamp"].min() >= start
    assert small_frame["timestamp"].max() < start + pd.Timedelta(days=small_config.n_days)
    assert (small_frame["amount"] > 0).all()
    assert (small_frame["account_age_days"] >= 0).all()
    assert (small_frame["label_known_at"] > small_frame["timestamp"]).all()
    # about 2 transactions per customer-day
    per_customer_day = len(small_frame) / (small_config.n_customers * small_config.n_days)
    assert 1.5 < per_customer_day < 2.6


def test_fraud_scenarios_look_like_their_story(small_frame):
    fraud = small_frame[small_frame["is_fraud"] == 1]
    assert 0.003 < small_frame["is_fraud"].mean() < 0.04
    assert (small_frame["fraud_scenario"] != "").sum() == len(fraud)
    present = set(fraud["fraud_scenario"].astype(str))
    assert present == set(SCENARIOS) - {"mobile_wallet_fraud"}

    genuine_amount = small_frame.loc[small_frame["is_fraud"] == 0, "amount"].median()
    stolen = fraud[fraud["fraud_scenario"] == "stolen_card"]
    assert stolen["amount"].median() > 2.5 * genuine_amount

    ato = fraud[fraud["fraud_scenario"] == "account_takeover"]
    assert set(ato["channel"].astype(str)) == {"mobile"}
    assert set(ato["transaction_type"].astype(str)) == {"transfer"}
    assert (ato["timestamp"].dt.hour < 5).all()

    testing = fraud[fraud["fraud_scenario"] == "card_testing"]
    assert (testing["amount"] <= 3.0).mean() > 0.8  # mostly tiny probes ...
    assert (testing["amount"] >= 200).any()  # ... then the big purchase

    # a compromised terminal keeps producing fraud over several days
    per_terminal = fraud[fraud["fraud_scenario"] == "compromised_terminal"].groupby(
        "terminal_id", observed=True
    )["timestamp"]
    assert (per_terminal.max() - per_terminal.min()).max() > pd.Timedelta(days=3)


def test_labels_arrive_after_a_delay(small_config, small_frame):
    delay_days = (
        small_frame["label_known_at"] - small_frame["timestamp"]
    ).dt.total_seconds() / 86400
    fraud_delay = delay_days[small_frame["is_fraud"] == 1]
    assert fraud_delay.min() >= 1
    assert abs(fraud_delay.mean() - small_config.label_delay_days) < 1.5
    assert np.allclose(delay_days[small_frame["is_fraud"] == 0], small_config.genuine_label_days)


def test_drift_period_keeps_the_portfolio_and_changes_behaviour(small_frame, drifted_frame):
    assert drifted_frame["timestamp"].min() > small_frame["timestamp"].max()
    assert not set(drifted_frame["transaction_id"]) & set(small_frame["transaction_id"])
    # the same customers keep their account type
    merged = small_frame.drop_duplicates("customer_id")[["customer_id", "account_type"]].merge(
        drifted_frame.drop_duplicates("customer_id")[["customer_id", "account_type"]],
        on="customer_id",
    )
    assert len(merged) > 200
    assert (merged["account_type_x"].astype(str) == merged["account_type_y"].astype(str)).all()

    genuine = small_frame[small_frame["is_fraud"] == 0]
    genuine_later = drifted_frame[drifted_frame["is_fraud"] == 0]
    assert genuine_later["amount"].mean() > 1.2 * genuine["amount"].mean()
    mobile_before = (genuine["channel"] == "mobile").mean()
    mobile_after = (genuine_later["channel"] == "mobile").mean()
    assert mobile_after > mobile_before + 0.05
    assert (drifted_frame["fraud_scenario"] == "mobile_wallet_fraud").sum() > 10


def test_portfolio_depends_only_on_seed_and_size(small_config):
    a = generate_portfolio(small_config)
    b = generate_portfolio(drift_period(small_config))
    assert np.array_equal(a.customer_x, b.customer_x)
    assert np.array_equal(a.terminal_category, b.terminal_category)


def test_sizing_by_transaction_count():
    config = GeneratorConfig.for_transactions(50_000, n_days=25)
    frame = generate_transactions(config)
    assert 40_000 < len(frame) < 60_000


def test_rejects_a_portfolio_too_small_to_make_sense():
    with pytest.raises(ValueError, match="at least 1 customer, 20 terminals"):
        generate_transactions(GeneratorConfig(n_customers=5, n_terminals=3))
