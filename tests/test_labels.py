"""Late labels: join, per-day realised performance, the floor."""

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from components.audit import read_audit
from components.inference_log import make_record, write_batch
from components.store import LocalStore
from monitoring.labels import LabelFileError, PerformanceFloor, ingest_labels
from monitoring.labels_job import app

DAY1 = datetime(2026, 6, 1, 10, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    """Two days of logged predictions: day 1 the model catches fraud, day 2 it misses it."""
    store = LocalStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    records = []
    for day, good in ((0, True), (1, False)):
        for i in range(200):
            fraud = i < 10
            score = (0.9 if fraud else 0.1) if good else (0.1 if fraud else rng.uniform(0, 0.3))
            if not good and i in (150, 151):
                score = 0.95  # false alarms
            records.append(
                make_record(
                    model="fraud",
                    version="v1",
                    transaction={"transaction_id": f"d{day}-{i}"},
                    score=score,
                    decision="alert" if score >= 0.5 else "pass",
                    time=DAY1 + timedelta(days=day, minutes=i),
                )
            )
    write_batch(store, records)
    return store


def chargebacks() -> pd.DataFrame:
    ids = [f"d{day}-{i}" for day in (0, 1) for i in range(10)]
    return pd.DataFrame(
        {"transaction_id": [*ids, "d0-3", "unknown-1"], "is_fraud": [1] * 20 + [1, 1]}
    )


def test_per_day_realised_performance_and_the_floor(store):
    result = ingest_labels(store, "fraud", chargebacks(), PerformanceFloor(min_recall=0.5))
    assert (result.labels_in, result.matched, result.unmatched, result.duplicates) == (22, 20, 1, 1)
    daily = result.daily.set_index("day")
    assert daily.loc["2026-06-01", "recall"] == 1.0 and daily.loc["2026-06-01", "precision"] == 1.0
    assert daily.loc["2026-06-01", "average_precision"] == 1.0
    assert daily.loc["2026-06-02", "recall"] == 0.0 and daily.loc["2026-06-02", "alerts"] == 2
    assert daily.loc["2026-06-02", "frauds"] == 10
    assert [b["day"] for b in result.breaches] == ["2026-06-02"]
    assert set(result.breaches[0]["below_floor"]) == {"recall", "average_precision"}
    assert store.exists(result.keys["daily"])


def test_bad_label_files_are_explained(store):
    with pytest.raises(LabelFileError, match="no transaction_id column"):
        ingest_labels(store, "fraud", pd.DataFrame({"id": [1], "is_fraud": [1]}))
    with pytest.raises(
        LabelFileError, match=r"1 label\(s\) in 'is_fraud' are not 0 or 1 \(data rows \[2\]\)"
    ):
        ingest_labels(
            store, "fraud", pd.DataFrame({"transaction_id": ["a", "b"], "is_fraud": [1, 7]})
        )


def test_labels_command_records_the_drop_alerts_and_exits_3(store, tmp_path, webhook_receiver):
    path = tmp_path / "chargebacks.csv"
    chargebacks().to_csv(path, index=False)
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--model", "fraud", "--store", str(store.root)]
    )
    assert result.exit_code == 3, result.output
    assert "matched 20" in result.output and "performance below the floor" in result.output
    assert read_audit(store, "performance_drop")[0]["outcome"]["breaches"][0]["day"] == "2026-06-02"
    assert read_audit(store, "labels_ingest")
    assert [a["kind"] for a in webhook_receiver] == ["performance"]
    assert "2026-06-02" in webhook_receiver[0]["summary"]
    fine = CliRunner().invoke(
        app,
        [
            "ingest",
            str(path),
            "--model",
            "fraud",
            "--store",
            str(store.root),
            "--min-recall",
            "0",
            "--min-average-precision",
            "0",
        ],
    )
    assert fine.exit_code == 0 and "above the floor" in fine.output


def test_suspicious_transactions_go_out_as_one_batched_alert(tmp_path, webhook_receiver):
    from datetime import datetime

    from monitoring.alerts_job import app as alerts_app

    store = LocalStore(tmp_path / "store")
    now = datetime.now(UTC)
    write_batch(
        store,
        [
            make_record(
                model="fraud",
                version="v1",
                transaction={"transaction_id": f"t{i}"},
                score=0.9 if i < 3 else 0.1,
                decision="alert" if i < 3 else "pass",
                reasons=["amount=900 (+2.1)"],
                time=now - timedelta(minutes=1),
            )
            for i in range(10)
        ],
    )
    result = CliRunner().invoke(
        alerts_app, ["suspicious", "--model", "fraud", "--store", str(store.root)]
    )
    assert result.exit_code == 0, result.output
    assert len(webhook_receiver) == 1
    alert = webhook_receiver[0]
    assert alert["kind"] == "suspicious_transactions"
    assert "t0" in str(alert["details"]) and "t5" not in str(alert["details"])
    assert read_audit(store, "alert")


def test_labels_carry_their_transactions_terminal_and_time_for_the_online_state(tmp_path):
    """From the label file where it has them, else from the logged prediction; a label with
    neither is counted (``placed``) and kept for realised performance."""
    store = LocalStore(tmp_path / "store")
    logged = {
        "a": ("t-1", "2026-06-01T10:00:00.250Z"),
        "b": ("t-2", "2026-06-01T12:00:00+02:00"),
    }
    write_batch(
        store,
        [
            make_record(
                model="fraud",
                version="v1",
                transaction={"transaction_id": tx, "terminal_id": t, "timestamp": stamp},
                score=0.2,
                decision="pass",
                time=DAY1,
            )
            for tx, (t, stamp) in logged.items()
        ],
    )
    labels = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "y", "z"],
            "is_fraud": [1, 1, 1, 0],
            # b: the logged terminal and time win over the file's (a feed's time is coarse)
            "terminal_id": [None, "t-9", "t-3", None],
            "timestamp": [None, "2026-06-01", "2026-05-30T08:00:00Z", None],
        }
    )
    result = ingest_labels(store, "fraud", labels)
    assert (result.labels_in, result.matched, result.placed) == (4, 2, 3)
    stored = pd.read_parquet(io.BytesIO(store.get_bytes(result.keys["labels"])))
    stored = stored.set_index("transaction_id")
    assert stored["terminal_id"].tolist() == ["t-1", "t-2", "t-3", None]
    assert stored["timestamp"].tolist()[:3] == [
        pd.Timestamp("2026-06-01T10:00:00.250Z"),
        pd.Timestamp("2026-06-01T10:00:00Z"),
        pd.Timestamp("2026-05-30T08:00:00Z"),
    ]
    assert pd.isna(stored.loc["z", "timestamp"])

    bad = labels.assign(timestamp=["2026-06-01T10:00:00Z", "yesterday", None, None])
    with pytest.raises(
        LabelFileError, match=r"1 timestamp\(s\) cannot be read \(data rows \[2\]\)"
    ):
        ingest_labels(store, "fraud", bad)


def test_the_command_reads_ids_as_text_and_skips_a_stray_file_in_the_labels(tmp_path, caplog):
    """ "00090005" stays itself (not 90005), a terminal column with blanks does not turn "0042"
    into 42.0, and a file under labels/ that is not a label file does not stop ingestion."""
    store = LocalStore(tmp_path / "store")
    write_batch(
        store,
        [
            make_record(
                model="fraud",
                version="v1",
                transaction={"transaction_id": "00090005", "terminal_id": "0042",
                             "timestamp": "2026-06-01T10:00:00Z"},
                score=0.2,
                decision="pass",
                time=DAY1,
            )
        ],
    )  # fmt: skip
    store.put_bytes("labels/fraud/2026-01-01/000000000000-stray.parquet", b"not parquet")
    path = tmp_path / "chargebacks.csv"
    path.write_text("transaction_id,is_fraud,terminal_id\n00090005,1,\nq-7,1,0042\n")
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--model", "fraud", "--store", str(store.root)]
    )
    assert result.exit_code == 0, result.output
    assert "labels in 2: matched 1" in result.output
    assert "stray.parquet is not a label file" in caplog.text
    (key,) = [k for k in store.list("labels/fraud/") if "stray" not in k]
    stored = pd.read_parquet(io.BytesIO(store.get_bytes(key))).set_index("transaction_id")
    assert stored["terminal_id"].to_dict() == {"00090005": "0042", "q-7": "0042"}
