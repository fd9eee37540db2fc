import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from components.frames import write_table
from components.loaders import load_transactions
from components.validation import (
    RejectedShareError,
    ValidationConfig,
    check_rejected_share,
    validate_transactions,
)

# (row position, column, planted value, expected reason fragment)
PLANTED = [
    (3, "amount", "-12.50", "amount: negative amount (-12.5)"),
    (10, "amount", "twelve", "amount: not a number (twelve)"),
    (17, "amount", "inf", "amount: not finite (inf)"),
    (25, "timestamp", "2099-01-01T00:00:00Z", "timestamp: in the future"),
    (31, "timestamp", "yesterday", "timestamp: not a date-time"),
    (40, "customer_id", "", "customer_id: missing"),
    (44, "channel", "fax", "channel: not one of"),
    (52, "is_fraud", "2", "is_fraud: label must be 0 or 1 (2.0)"),
    (60, "account_age_days", "-3", "account_age_days: negative account age"),
    (66, "account_balance", "-2e15", "account_balance: beyond ±1e+15 (overflows"),
]


@pytest.fixture
def planted_csv(tmp_path, small_frame):
    frame = small_frame.head(400).astype(object).copy()
    frame["timestamp"] = small_frame["timestamp"].head(400).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame["label_known_at"] = (
        small_frame["label_known_at"].head(400).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    for row, column, value, _ in PLANTED:
        frame.loc[row, column] = value
    frame.loc[70, "transaction_id"] = frame.loc[69, "transaction_id"]  # duplicate id
    path = tmp_path / "planted.csv"
    frame.to_csv(path, index=False)
    return path


def test_each_planted_bad_row_is_quarantined_with_its_reason(planted_csv):
    loaded = load_transactions(planted_csv)
    result = validate_transactions(loaded.frame, ValidationConfig(require_label=True))
    report = result.report
    assert report["rows_in"] == 400
    assert report["quarantined"] == len(PLANTED) + 1
    assert report["accepted"] + report["quarantined"] == report["rows_in"]
    reasons = result.quarantined.set_index("source_row")["reasons"]
    for row, _, _, fragment in PLANTED:
        assert fragment in reasons[row + 1], (row, reasons[row + 1])
    # the first occurrence of a duplicated id is kept, the second quarantined
    assert "transaction_id: duplicate" in reasons[71]
    assert 70 not in reasons.index
    # quarantined rows keep the value as it was read
    assert result.quarantined.set_index("source_row").loc[11, "amount"] == "twelve"
    assert report["reasons"]["amount: negative amount"] == 1


def test_accepted_rows_are_typed(planted_csv):
    result = validate_transactions(load_transactions(planted_csv).frame)
    accepted = result.accepted
    assert str(accepted["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert accepted["amount"].dtype == "float64"
    assert isinstance(accepted["channel"].dtype, pd.CategoricalDtype)
    assert "source_row" not in accepted.columns


def test_rejected_share_limit(planted_csv):
    frame = load_transactions(planted_csv).frame
    strict = validate_transactions(frame, ValidationConfig(max_rejected_share=0.01))
    assert not strict.passed
    with pytest.raises(RejectedShareError, match=r"11 of 400 rows \(2.75%\).*--max-rejected-share"):
        check_rejected_share(strict, "planted.csv")
    lenient = validate_transactions(frame, ValidationConfig(max_rejected_share=0.05))
    assert lenient.passed
    check_rejected_share(lenient)


def test_missing_label_only_matters_when_required(small_frame):
    frame = small_frame.head(50).copy()
    frame["is_fraud"] = frame["is_fraud"].astype(float)
    frame.loc[5, "is_fraud"] = float("nan")
    assert validate_transactions(frame).report["quarantined"] == 0
    required = validate_transactions(frame, ValidationConfig(require_label=True))
    assert required.quarantined["reasons"].tolist() == ["is_fraud: missing"]


def test_future_is_judged_against_the_given_clock(small_frame):
    frame = small_frame.head(100)
    before_the_data = ValidationConfig(now=datetime(2026, 4, 1, 6, tzinfo=UTC))
    result = validate_transactions(frame, before_the_data)
    later = frame["timestamp"] > pd.Timestamp("2026-04-01T06:05:00Z")
    assert result.report["quarantined"] == later.sum() > 0


def test_generated_data_is_clean(small_frame):
    result = validate_transactions(small_frame, ValidationConfig(require_label=True))
    assert result.report["quarantined"] == 0
    assert result.report["accepted"] == len(small_frame)


def test_empty_input_fails_clearly():
    empty = pd.DataFrame(
        columns=["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"]
    )
    result = validate_transactions(empty)
    with pytest.raises(RejectedShareError, match="no rows"):
        check_rejected_share(result, "empty.csv")


def test_report_is_json_serialisable(planted_csv, tmp_path):
    result = validate_transactions(load_transactions(planted_csv).frame)
    json.dumps(result.report)
    write_table(result.quarantined, tmp_path / "q.csv")
    back = pd.read_csv(tmp_path / "q.csv")
    assert len(back) == result.report["quarantined"]
