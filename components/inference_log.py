"""The inference log: one record per scored transaction, shared by serving and monitoring.

Records carry the CloudEvents attributes KServe's logger sends (``id``, ``specversion``, ``type``,
``source``, ``time``) plus the model name and version, the transaction's fields, the score, the
decision, the reason codes, the latency and, when the writer has them, the engineered features.
They are stored as Parquet batches, partitioned by model version and date::

    inference-log/<model>/<version>/date=YYYY-MM-DD/<HHMMSSffffff>-<batch id>.parquet

with one flat column per attribute, ``tx.<field>`` per transaction field and ``feature.<name>``
per feature (Parquet, not JSON lines: a million records read in well under a second). Each
batch is one immutable object written atomically, so a reader never sees half a batch. The
drift job, the canary analysis and label feedback all read this one format, as records
(:func:`read_records`) or as one flat frame (:func:`read_frame`).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from components.store import ObjectStore

__all__ = [
    "PREFIX",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "batch_key",
    "batch_keys",
    "block_records",
    "make_record",
    "read_frame",
    "read_records",
    "record_columns",
    "write_batch",
]
TX = "tx."
FEATURE = "feature."

PREFIX = "inference-log"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


def make_record(
    *,
    model: str,
    version: str,
    transaction: dict[str, Any],
    score: float,
    decision: str,
    reasons: list[str] | None = None,
    latency_ms: float | None = None,
    event_id: str | None = None,
    source: str = "fraudops-serving",
    protocol: str = "v1",
    time: datetime | str | None = None,
    features: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One inference-log record (a CloudEvents-shaped dict).

    Args:
        model: Model name.
        version: Bundle version that scored.
        transaction: The transaction's fields as received (JSON-serialisable).
        score: Fraud score.
        decision: ``alert`` or ``pass``.
        reasons: Reason codes.
        latency_ms: Server-side latency of the request, in milliseconds.
        event_id: The CloudEvent id (KServe's request id); a new one when None.
        source: CloudEvent source (the server's URL or name).
        protocol: ``v1`` or ``v2``.
        time: When it was scored (default now, UTC), or that time in ISO 8601 already.
        features: Engineered features, when the writer has them (drift on features).
    """
    record = {
        "id": event_id or uuid.uuid4().hex,
        "specversion": "1.0",
        "type": RESPONSE_TYPE,
        "source": source,
        "time": time if isinstance(time, str) else (time or datetime.now(UTC)).isoformat(),
        "model": model,
        "version": version,
        "protocol": protocol,
        "transaction": transaction,
        "score": float(score),
        "decision": decision,
        "reasons": reasons or [],
        "latency_ms": latency_ms,
    }
    if features is not None:
        record["features"] = features
    return record


def record_columns(
    *,
    model: str,
    version: str,
    transactions: dict[str, list[Any]],
    score: list[float],
    decision: list[str],
    reasons: list[list[str]],
    event_ids: list[str],
    time: str,
    latency_ms: float | None = None,
    source: str = "fraudops-serving",
    protocol: str = "v1",
    features: dict[str, list[float | None]] | None = None,
) -> dict[str, list[Any]]:
    """The records :func:`make_record` gives for one request's transactions, as the flat
    columns they are stored in (``tx.<field>``, ``feature.<name>``), without a dict per record.

    All records of the block share the model, the version and the time. ``transactions``
    holds one list per field (None where a transaction lacks the field), ``features`` one
    list per feature.
    """
    n = len(score)
    columns: dict[str, list[Any]] = {
        "id": event_ids,
        "specversion": ["1.0"] * n,
        "type": [RESPONSE_TYPE] * n,
        "source": [source] * n,
        "time": [time] * n,
        "model": [model] * n,
        "version": [version] * n,
        "protocol": [protocol] * n,
        "score": score,
        "decision": decision,
        "reasons": reasons,
        "latency_ms": [latency_ms] * n,
    }
    columns.update({TX + k: v for k, v in transactions.items()})
    columns.update({FEATURE + k: v for k, v in (features or {}).items()})
    return columns


def block_records(block: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The records (as :func:`make_record` shapes them) of a block of :func:`record_columns`."""
    names = list(block)
    rows = zip(*block.values(), strict=True)
    return [_unflatten(dict(zip(names, row, strict=True))) for row in rows]


def batch_key(model: str, version: str, when: datetime | None = None) -> str:
    """The store key of a new batch for ``model``/``version`` written ``when``."""
    when = when or datetime.now(UTC)
    return (
        f"{PREFIX}/{model}/{version}/date={when:%Y-%m-%d}/"
        f"{when:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    )


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The flat columns of ``records``: attributes, ``tx.<field>``, ``feature.<name>`` (None
    where a record lacks one)."""
    nested = ("transaction", "features")
    columns = {k: [r.get(k) for r in records] for k in _keys(records) if k not in nested}
    transactions = [r["transaction"] for r in records]
    for k in _keys(transactions):
        columns[TX + k] = [t.get(k) for t in transactions]
    features = [r.get("features") or {} for r in records]
    for k in _keys(features):
        columns[FEATURE + k] = [f.get(k) for f in features]
    return columns


def _keys(dicts: list[dict[str, Any]]) -> list[str]:
    """Every key of ``dicts``: the first one's in order, then the others' sorted."""
    first = list(dicts[0]) if dicts else []
    return first + sorted(set().union(*dicts).difference(first))


def _table(columns: dict[str, list[Any]]):
    """Flat record columns as one Arrow table, ``time`` as UTC timestamps."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table(columns)
    at = table.column_names.index("time")
    try:
        time = pc.cast(table.column(at), pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # not the ISO 8601 Arrow reads
        text = table.column(at).to_pandas()
        time = pa.array(pd.to_datetime(text, utc=True, format="ISO8601"))
    return table.set_column(at, "time", time)


def _unflatten(row: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"transaction": {}}
    for key, value in row.items():
        if key.startswith(TX):
            if value is not None and not (isinstance(value, float) and pd.isna(value)):
                record["transaction"][key[len(TX) :]] = value
        elif key.startswith(FEATURE):
            record.setdefault("features", {})[key[len(FEATURE) :]] = value
        else:
            record[key] = list(value) if key == "reasons" and value is not None else value
    return record


def write_batch(
    store: ObjectStore,
    records: Iterable[dict[str, Any]],
    blocks: Iterable[dict[str, list[Any]]] = (),
) -> list[str]:
    """Write records, and blocks of :func:`record_columns`, as one Parquet batch per (model,
    version, date); return the keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: dict[tuple[str, str, str], tuple[list[dict[str, Any]], list[dict[str, list]]]] = {}
    for record in records:
        key = (record["model"], record["version"], record["time"][:10])
        groups.setdefault(key, ([], []))[0].append(record)
    for block in blocks:
        key = (block["model"][0], block["version"][0], block["time"][0][:10])
        groups.setdefault(key, ([], []))[1].append(block)
    keys = []
    for (model, version, _day), (group, group_blocks) in groups.items():
        first = group[0]["time"] if group else group_blocks[0]["time"][0]
        key = batch_key(model, version, datetime.fromisoformat(first))
        tables = [_table(_columns(group))] if group else []
        tables += [_table(block) for block in group_blocks]
        table = (
            tables[0]
            if len(tables) == 1
            else pa.concat_tables(tables, promote_options="permissive")
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        store.put_bytes(key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
        keys.append(key)
    return keys


def batch_keys(
    store: ObjectStore,
    model: str,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[str]:
    """Keys of ``model``'s batches (one version or all) in the date partitions from ``start``'s
    day to ``end``'s day (a batch holds the records of one day)."""
    prefix = f"{PREFIX}/{model}/" + (f"{version}/" if version else "")
    keys = []
    for key in store.list(prefix):
        if not key.endswith(".parquet"):
            continue
        day = key.split("date=")[-1][:10]
        if start and day < start.strftime("%Y-%m-%d"):
            continue
        if end and day > end.strftime("%Y-%m-%d"):
            continue
        keys.append(key)
    return keys


def _as_text_where_types_differ(tables: list) -> list:
    """Batches written by different writers may type a column differently (integer ids from
    one, text from another; timestamps as text or as Arrow timestamps): such a column becomes
    text in every batch, so they concatenate (Arrow would refuse) and read alike."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types: dict[str, set] = {}
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):  # an all-null column takes any type
                types.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, kinds in types.items() if len(kinds) > 1}
    if not mixed:
        return tables
    out = []
    for table in tables:
        for name in mixed.intersection(table.column_names):
            at = table.column_names.index(name)
            column = table.column(at)
            if pa.types.is_timestamp(column.type):  # as ISO 8601, as the writers log them
                # Arrow's %S carries the fraction of the second
                text = pc.strftime(column.cast(pa.timestamp("us", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
            else:
                text = column.cast(pa.string())
            table = table.set_column(at, name, text)
        out.append(table)
    return out


def _parse_timestamp_column(table, name: str):
    """Parse an ISO-8601 text column to UTC timestamps inside Arrow (fast); keep it if it fails."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if name not in table.column_names or not pa.types.is_string(table.schema.field(name).type):
        return table
    try:
        parsed = pc.cast(table.column(name), pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return table
    return table.set_column(table.column_names.index(name), name, parsed)


def read_frame(
    store: ObjectStore,
    model: str,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
    typed: bool = True,
) -> pd.DataFrame:
    """Records of ``model`` (one version or all) with ``start <= time < end`` as one flat frame.

    Columns are the record attributes, ``tx.<field>`` and ``feature.<name>``; ``time`` (and
    ``tx.timestamp`` when it is ISO-8601 text) are UTC timestamps; text columns are
    categoricals. ``columns`` limits what is read (``time`` is always read). ``typed=False``
    keeps the logged values as they were written (only ``time`` is parsed).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = None if columns is None else sorted({"time", *columns})
    tables = []
    for key in batch_keys(store, model, version, start, end):
        table = pq.read_table(io.BytesIO(store.get_bytes(key)))
        if wanted is not None:
            table = table.select([c for c in wanted if c in table.column_names])
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=wanted or ["time"])
    table = pa.concat_tables(_as_text_where_types_differ(tables), promote_options="default")
    if typed:
        table = _parse_timestamp_column(table, TX + "timestamp")
    # text columns repeat (ids, categories): categoricals are far cheaper to build and group
    frame = table.to_pandas(strings_to_categorical=typed)
    if not pd.api.types.is_datetime64_any_dtype(frame["time"]):  # batches written as text
        frame["time"] = pd.to_datetime(frame["time"].astype(str), utc=True, format="ISO8601")
    if start is not None:
        frame = frame[frame["time"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["time"] < pd.Timestamp(end)]
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def read_records(
    store: ObjectStore,
    model: str,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """Records of ``model`` (one version or all) with ``start <= time < end``, oldest first."""
    frame = read_frame(store, model, version, start, end, typed=False)
    frame["time"] = frame["time"].map(lambda t: t.isoformat())
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [_unflatten(row) for row in rows]
