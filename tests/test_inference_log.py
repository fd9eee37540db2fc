from datetime import UTC, datetime, timedelta

import pytest

from components.inference_log import (
    RESPONSE_TYPE,
    make_record,
    read_frame,
    read_records,
    write_batch,
)
from components.store import LocalStore, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return open_store(
        f"s3://log-{abs(hash(str(tmp_path))) % 10**8}", env=request.getfixturevalue("s3_env")
    )


def _record(i: int, when: datetime, version: str = "v1") -> dict:
    return make_record(
        model="fraud",
        version=version,
        transaction={"transaction_id": f"t{i}", "amount": 10.0 + i},
        score=i / 100,
        decision="alert" if i > 50 else "pass",
        reasons=["amount=60 (+1.2)"],
        latency_ms=1.5,
        time=when,
    )


def test_records_are_cloudevents_shaped():
    record = _record(1, datetime(2026, 5, 1, tzinfo=UTC))
    assert record["specversion"] == "1.0" and record["type"] == RESPONSE_TYPE
    assert {"id", "source", "time", "model", "version", "score", "decision", "latency_ms"} <= set(
        record
    )


def test_batches_are_partitioned_by_version_and_date_and_read_back_in_time_order(store):
    day1 = datetime(2026, 5, 1, 23, 59, tzinfo=UTC)
    records = [_record(i, day1 + timedelta(minutes=i)) for i in range(3)]
    records += [_record(9, day1, version="v2")]
    keys = write_batch(store, records)
    assert all(k.endswith(".parquet") for k in keys)
    assert sorted(k.split("/")[2] + "/" + k.split("/")[3] for k in keys) == [
        "v1/date=2026-05-01",
        "v1/date=2026-05-02",
        "v2/date=2026-05-01",
    ]
    everything = read_records(store, "fraud")
    assert [r["transaction"]["transaction_id"] for r in everything] == ["t0", "t9", "t1", "t2"]
    v1 = read_records(store, "fraud", "v1")
    assert len(v1) == 3
    window = read_records(
        store, "fraud", "v1", start=day1 + timedelta(minutes=1), end=day1 + timedelta(minutes=2)
    )
    assert [r["transaction"]["transaction_id"] for r in window] == ["t1"]
    assert read_records(store, "other") == []


def test_records_round_trip_exactly_and_read_frame_is_flat(store):
    from components.inference_log import read_frame

    when = datetime(2026, 5, 3, 12, tzinfo=UTC)
    record = make_record(
        model="fraud",
        version="v3",
        transaction={
            "transaction_id": "x",
            "amount": 12.5,
            "channel": "pos",
            "timestamp": "2026-05-03T11:59:00Z",
        },
        score=0.75,
        decision="alert",
        reasons=["a=1 (+0.50)", "b=2 (+0.25)"],
        latency_ms=0.8,
        time=when,
        features={"amount": 12.5, "hour": 12.0},
    )
    write_batch(store, [record])
    assert read_records(store, "fraud", "v3") == [record]
    frame = read_frame(
        store, "fraud", "v3", columns=["score", "tx.amount", "feature.hour", "tx.timestamp"]
    )
    assert list(frame.columns) == ["feature.hour", "score", "time", "tx.amount", "tx.timestamp"]
    assert frame.loc[0, "tx.amount"] == 12.5 and frame.loc[0, "time"] == when
    assert frame.loc[0, "tx.timestamp"] == when - timedelta(minutes=1)  # parsed, typed


def test_read_frame_reads_batches_whose_writers_typed_a_column_differently(store):
    """Integer ids from one writer, text from another; Arrow timestamps beside ISO text:
    such columns are read as text (timestamps in ISO 8601, then parsed), not refused."""
    import io

    import pandas as pd

    when = datetime(2026, 6, 1, 12, tzinfo=UTC)
    write_batch(
        store,
        [
            make_record(
                model="fraud",
                version="v1",
                transaction={"transaction_id": "a", "terminal_id": "t-1",
                             "timestamp": "2026-06-01T10:00:00.250Z"},
                score=0.1,
                decision="pass",
                time=when,
            )
        ],
    )  # fmt: skip
    other = pd.DataFrame(
        {
            "time": [when],
            "tx.transaction_id": [7],
            "tx.terminal_id": [5],
            "tx.timestamp": [pd.Timestamp("2026-06-01T11:00:00.5Z")],
            "score": [0.2],
            "decision": ["pass"],
            "version": ["v2"],
        }
    )
    buffer = io.BytesIO()
    other.to_parquet(buffer)
    store.put_bytes(
        "inference-log/fraud/v2/date=2026-06-01/120000000000-x.parquet", buffer.getvalue()
    )
    frame = read_frame(
        store, "fraud", columns=["tx.transaction_id", "tx.terminal_id", "tx.timestamp"]
    )
    assert frame["tx.transaction_id"].astype(str).tolist() == ["a", "7"]
    assert frame["tx.terminal_id"].astype(str).tolist() == ["t-1", "5"]
    assert frame["tx.timestamp"].tolist() == [
        pd.Timestamp("2026-06-01T10:00:00.250Z"),
        pd.Timestamp("2026-06-01T11:00:00.5Z"),
    ]
