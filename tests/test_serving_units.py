"""Serving building blocks in-process: validation, online state and features, log writer, sink.

The real server process is tested in ``test_serving.py``; here each part runs on its own with
real inputs (a tiny trained bundle, a local store, generated transactions).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import start_redis_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)
from kserve.protocol.rest.v2_datamodels import InferenceResponse
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from serving_helpers import (
    instance,
    later_transactions,
    on_loop,
    predict,
    shared_model,
    tensors,
)

from components.bundle import Bundle, fetch_bundle
from components.features import compute_features
from components.inference_log import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    make_record,
    read_frame,
    read_records,
    write_batch,
)
from components.scoring import format_reasons, reason_codes, score_frame
from components.store import LocalStore
from fraudops.cli_serve import model_uri_for
from serving.direct_routes import _plain_request, encode_response, parse_v2, takes
from serving.errors import InvalidTransactions, PayloadTooLarge, ServingError
from serving.features import OnlineFeatures
from serving.log_sink import Event, EventPairer, SinkError, create_app, records_from_pair
from serving.log_writer import InferenceLogWriter, LogEntry, prebuilt, write_entries
from serving.metrics import ArrayHistogram, ServingMetrics
from serving.model import (
    FraudDetector,
    ServingConfig,
    columns_for,
    pack_request,
    packed_columns,
)
from serving.redis_state import RedisOnlineState, drop_version
from serving.scorer import Scorer
from serving.source import parse_model_uri
from serving.state import InMemoryOnlineState, OnlineState
from serving.transactions import TransactionSchema, from_instances, from_tensors

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SCHEMA = TransactionSchema(max_batch=50)
GOOD = {
    "transaction_id": "t-1",
    "timestamp": "2026-05-16T10:00:00Z",
    "customer_id": "C000001",
    "terminal_id": "T000002",
    "amount": 12.5,
    "channel": "Online ",
    "account_balance": 100.0,
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    trained = shared_model(tmp_path_factory)
    store = LocalStore(trained.store)
    return fetch_bundle(store, trained.name, "champion", tmp_path_factory.mktemp("fetched"))


# -- validation ---------------------------------------------------------------------------


def _v1(*instances, **kw):
    return from_instances({"instances": list(instances)}, SCHEMA, now=kw.get("now", NOW))


def test_v1_transactions_are_normalised_like_batch_validation():
    batch = _v1(GOOD, {**GOOD, "transaction_id": " t-2 ", "timestamp": "2026-05-16T12:00:00+02:00"})
    assert batch.transaction_id == ["t-1", "t-2"]
    assert (
        batch.time_ms.tolist() == [int(pd.Timestamp("2026-05-16T10:00:00Z").value // 1_000_000)] * 2
    )
    assert batch.categorical["channel"] == ["online", "online"]
    assert math.isnan(batch.numeric["account_age_days"][0])
    assert batch.transaction(0) == {**GOOD, "channel": "online"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": -5}, "instance 1: amount: must be >= 0, got -5"),
        ({"amount": "12"}, "instance 1: amount: must be a number, got string"),
        ({"amount": True}, "instance 1: amount: must be a number, got boolean"),
        ({"amount": float("nan")}, "instance 1: amount: not a finite number (nan)"),
        ({"account_balance": float("inf")}, "instance 1: account_balance: not a finite number"),
        ({"account_age_days": -1.0}, "instance 1: account_age_days: must be >= 0"),
        ({"amount": 2e15}, "instance 1: amount: must be within ±1e+15 (a larger number"),
        ({"account_balance": -(10**300)}, "instance 1: account_balance: must be within ±1e+15"),
        ({"account_balance": 10**400}, "instance 1: account_balance: not a finite number"),
        ({"amount": None}, "instance 1: amount: missing (required)"),
        ({"customer_id": "  "}, "instance 1: customer_id: missing (required)"),
        ({"customer_id": 7}, "instance 1: customer_id: must be a string, got integer"),
        ({"terminal_id": "x" * 300}, "instance 1: terminal_id: longer than 256 characters"),
        ({"timestamp": "yesterday"}, "instance 1: timestamp: not an ISO 8601 date-time"),
        ({"timestamp": 1715850000}, "instance 1: timestamp: must be an ISO 8601 string"),
        ({"timestamp": "2026-06-02T00:00:00Z"}, "instance 1: timestamp: in the future"),
        ({"timestamp": "1960-01-01T00:00:00Z"}, "instance 1: timestamp: before 1970"),
        ({"channel": "pigeon"}, "instance 1: channel: 'pigeon' is not one of"),
        ({"merchant_category": 3}, "instance 1: merchant_category: must be a string"),
        ({"colour": "red"}, "instance 1: unknown field 'colour'"),
        ({"is_fraud": 1}, "instance 1: 'is_fraud' is a label field"),
        ({"transaction_id": "t-1"}, "instance 1: transaction_id: duplicate 't-1'"),
    ],
)
def test_each_v1_problem_names_the_instance_the_field_and_the_problem(change, expected):
    with pytest.raises(InvalidTransactions) as info:
        _v1(GOOD, {**GOOD, "transaction_id": "t-2", **change})
    assert expected in str(info.value)
    assert info.value.status == 400


@st.composite
def iso_like(draw) -> str:
    """Date-time texts of the forms ISO 8601 allows, and near misses either parser reads."""
    date = draw(st.sampled_from(["2026-05-16", "20260516", "2026-W20-6", "2026-W20", "2026-5-16"]))
    if draw(st.booleans()):
        return date
    sep = draw(st.sampled_from(["T", " ", "t", "_", "x"]))
    colon = draw(st.sampled_from([":", ""]))
    time = draw(st.sampled_from(["10", f"10{colon}30", f"10{colon}30{colon}15"]))
    if time.count("1") > 1 or len(time) > 4:  # seconds present: maybe a fraction
        time += draw(st.sampled_from(["", ".5", ".123456789", ",5", ".", "." + "1" * 19]))
    zone = draw(
        st.sampled_from(["", "Z", " Z", "z", "+05:30", "+0530", "+05", "-00:00", "+05:30:15"])
    )
    return f"{date}{sep}{time}{zone}"


@settings(max_examples=300, deadline=None)
@given(iso_like())
def test_a_timestamp_the_server_accepts_is_read_alike_by_batch_validation(text):
    try:
        batch = from_instances({"instances": [{**GOOD, "timestamp": text}]}, SCHEMA, now=NOW)
    except InvalidTransactions as e:
        assert "not an ISO 8601 date-time" in str(e)
        served = None
    else:
        served = int(batch.time_ms[0])
    try:
        stamp = pd.to_datetime(pd.Series([text]), utc=True, format="ISO8601").iloc[0]
        batch_ms = stamp.value // 1_000_000
    except (ValueError, OverflowError):
        batch_ms = None
    if served is not None:  # the inference log's replay and the drift job read it back
        assert served == batch_ms, text
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return
    if batch_ms is not None:  # both parsers read it: so does the server
        assert served == batch_ms, text


def test_problems_are_collected_over_the_whole_request():
    bad = {**GOOD, "amount": -1, "timestamp": "nope"}
    with pytest.raises(InvalidTransactions) as info:
        _v1(bad, {k: v for k, v in GOOD.items() if k != "customer_id"} | {"transaction_id": "x"})
    text = str(info.value)
    for part in (
        "instance 0: amount",
        "instance 0: timestamp",
        "instance 1: customer_id: missing",
    ):
        assert part in text


@pytest.mark.parametrize(
    ("payload", "expected", "error"),
    [
        ({"instances": []}, '"instances" is empty', InvalidTransactions),
        ({"instances": [GOOD] * 51}, "51 in one request; the limit is 50", PayloadTooLarge),
        ([GOOD], "must be a JSON object", InvalidTransactions),
        ({"instances": {"a": 1}}, '"instances" must be an array, got object', InvalidTransactions),
        ({"instance": [GOOD]}, "unknown top-level key(s) ['instance']", InvalidTransactions),
        ({"instances": [GOOD, 5]}, "instance 1: must be a transaction object", InvalidTransactions),
    ],
)
def test_malformed_v1_bodies(payload, expected, error):
    with pytest.raises(error) as info:
        from_instances(payload, SCHEMA, now=NOW)
    assert expected in str(info.value)


class _Tensor:
    """The attributes of kserve's InferInput that from_tensors reads."""

    def __init__(self, name, datatype, shape, data):
        self.name, self.datatype, self.shape, self.data = name, datatype, shape, data


def _inputs(instances):
    return [_Tensor(t["name"], t["datatype"], t["shape"], t["data"]) for t in tensors(instances)]


def test_v2_tensors_give_the_same_batch_as_v1_objects():
    rows = [GOOD, {**GOOD, "transaction_id": "t-2", "channel": None, "account_balance": None}]
    v1 = _v1(*rows)
    v2 = from_tensors(_inputs(rows), SCHEMA, now=NOW)
    assert [v2.transaction(i) for i in range(2)] == [v1.transaction(i) for i in range(2)]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t[4].__setattr__("datatype", "BYTES"), "input 'amount': datatype must be FP64"),
        (
            lambda t: t[0].__setattr__("datatype", "FP32"),
            "'transaction_id': datatype must be BYTES",
        ),
        (
            lambda t: t[4].__setattr__("shape", [2, 2]),
            "input 'amount': shape must be [n] or [n, 1]",
        ),
        (lambda t: t[4].__setattr__("shape", [3]), "shape says 3 element(s) but data has 2"),
        (lambda t: t[4].__setattr__("data", [1.0, -2.0]), "input 'amount' element 1: must be >= 0"),
        (lambda t: t[1].__setattr__("data", ["2026-05-16", "x"]), "'timestamp' element 1: not an"),
        (lambda t: t.append(_Tensor("amount", "FP64", [2], [1, 2])), "given more than once"),
        (lambda t: t.append(_Tensor("V1", "FP64", [2], [1, 2])), "unknown field 'V1'"),
        (lambda t: t.pop(2), "customer_id: missing (required) in every transaction"),
        (lambda t: t.append(_Tensor("channel", "BYTES", [3], ["a", "b", "c"])), ""),
    ],
)
def test_each_v2_problem_names_the_tensor_and_the_problem(mutate, expected):
    inputs = _inputs([GOOD, {**GOOD, "transaction_id": "t-2"}])
    mutate(inputs)
    with pytest.raises(InvalidTransactions) as info:
        from_tensors(inputs, SCHEMA, now=NOW)
    assert expected in str(info.value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from([*SCHEMA.fields, "is_fraud", "x", ""])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        json_values,
        st.lists(st.dictionaries(field_names, json_values, max_size=8), max_size=5).map(
            lambda xs: {"instances": xs}
        ),
        st.lists(
            st.fixed_dictionaries({}, optional={k: json_values for k in SCHEMA.fields}).map(
                lambda d: {**GOOD, **d}
            ),
            min_size=1,
            max_size=4,
        ).map(lambda xs: {"instances": xs}),
    )
)
def test_any_v1_body_is_either_a_batch_or_a_client_error(payload):
    try:
        batch = from_instances(payload, SCHEMA, now=NOW)
    except ServingError as e:
        assert str(e).startswith(("invalid request: ", "too many transactions"))
        return
    assert len(batch) >= 1 and np.isfinite(batch.amount).all() and (batch.amount >= 0).all()


# -- online state and features --------------------------------------------------------------


STATES = ["memory", "redis"]
"""The online states every state test runs on: what one replica keeps in memory, and what
several share in Redis (a real ``redis-server``) must give the same rows."""


@pytest.fixture(params=STATES)
def make_state(request):
    """``make_state(retention_days, snapshot=None, sweep_per_append=8)``: a fresh online state
    of the parametrised kind, seeded from ``snapshot``."""
    if request.param == "memory":

        def in_memory(retention_days, snapshot=None, sweep_per_append=8):
            state = InMemoryOnlineState(retention_days, sweep_per_append)
            if snapshot is not None:
                state.load_frame(snapshot)
            return state

        yield in_memory
        return
    url = request.getfixturevalue("redis_url")
    made = []

    def in_redis(retention_days, snapshot=None, sweep_per_append=8):
        state = RedisOnlineState(url, "units", uuid.uuid4().hex, retention_days, sweep_per_append)
        state.seed(pd.DataFrame() if snapshot is None else snapshot)
        made.append(state)
        return state

    yield in_redis
    for state in made:
        state._clear()
        state.close()


def _state(bundle: Bundle, make_state=None) -> OnlineState:
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    if make_state is None:
        state = InMemoryOnlineState(bundle.spec().history_days + 1)
        state.load_frame(snapshot)
        return state
    return make_state(bundle.spec().history_days + 1, snapshot)


def test_online_features_equal_batch_features_one_by_one_and_in_batches(bundle, make_state):
    spec, model = bundle.spec(), bundle.model()
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    new = later_transactions(400)
    # same customer and second twice in a row: neither sees the other ("strictly before")
    twin = new.iloc[[10]].assign(transaction_id="twin", amount=999.0)
    new = pd.concat([new.iloc[:11], twin, new.iloc[11:]], ignore_index=True)
    new.loc[5, ["channel", "account_balance"]] = [None, np.nan]
    expected = compute_features(new, spec, history=snapshot)[model.feature_names].to_numpy()
    online = OnlineFeatures(spec, model.feature_names)
    instances = [instance(r) for r in new.to_dict("records")]
    for size in (1, 7, 100):
        state = _state(bundle, make_state)
        got = []
        for k in range(0, len(instances), size):
            batch = from_instances({"instances": instances[k : k + size]}, TransactionSchema())
            got.append(online.compute(batch, state))
            state.append(batch.customer_id, batch.terminal_id, batch.time_ms, batch.amount)
        np.testing.assert_allclose(np.vstack(got), expected, rtol=1e-6, equal_nan=True)


def _snapshot_five_days_before_the_end(tmp_path_factory) -> tuple:
    """The shared model's data cut 5 days (less than the label delay) before its end: the
    cut, the transactions up to it, and the next 600."""
    data = shared_model(tmp_path_factory).data.sort_values("timestamp", kind="stable")
    cut = data["timestamp"].max() - pd.Timedelta(days=5)
    return cut, data[data["timestamp"] <= cut], data[data["timestamp"] > cut].head(600)


def _served(state: InMemoryOnlineState, spec, names: list[str], new: pd.DataFrame) -> np.ndarray:
    """The online features of ``new`` in requests of 50, each added to ``state`` once scored."""
    online, got = OnlineFeatures(spec, names), []
    instances = [instance(r) for r in new.to_dict("records")]
    for k in range(0, len(instances), 50):
        batch = from_instances({"instances": instances[k : k + 50]}, TransactionSchema())
        got.append(online.compute(batch, state))
        state.append(batch.customer_id, batch.terminal_id, batch.time_ms, batch.amount)
    return np.vstack(got)


def test_online_features_equal_the_features_training_sees(tmp_path_factory, bundle, make_state):
    """No training/serving skew: served from a snapshot taken at time T, the next days get the
    features that training computes over the whole history, where every transaction older than
    the label delay counts as labelled. Only frauds reported after T cannot be known online."""
    from components.steps.register import _snapshot

    spec, model = bundle.spec(), bundle.model()
    cut, past, new = _snapshot_five_days_before_the_end(tmp_path_factory)
    assert spec.label_delay_days > 5 and len(new) == 600
    # genuine transactions are confirmed weeks later: most labels are not known at T
    assert (past["label_known_at"] > cut).mean() > 0.3
    knowable = pd.concat([past, new], ignore_index=True)
    reported_late = (knowable["label_known_at"] > cut) & (knowable["is_fraud"] == 1)
    knowable.loc[reported_late, "is_fraud"] = 0
    expected = compute_features(knowable, spec)[model.feature_names].to_numpy()[len(past) :]

    state = make_state(spec.history_days + 1, _snapshot(past, spec))
    got = _served(state, spec, model.feature_names, new)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _ms(timestamps: pd.Series) -> np.ndarray:
    return ((timestamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy()


def test_late_labels_give_the_online_features_training_computes_with_every_label(
    tmp_path_factory, bundle, make_state
):
    """Label feedback closes the gap the test above allows: with the frauds reported after the
    snapshot put on the state, the next days get the features training computes over the true
    labels. Without them, the terminal fraud rates differ."""
    from components.steps.register import _snapshot

    spec, model = bundle.spec(), bundle.model()
    cut, past, new = _snapshot_five_days_before_the_end(tmp_path_factory)
    expected = compute_features(pd.concat([past, new]), spec)[model.feature_names].to_numpy()
    expected = expected[len(past) :]
    late = past[(past["label_known_at"] > cut) & (past["is_fraud"] == 1)]
    kept = late[late["timestamp"] > cut - pd.Timedelta(days=spec.history_days)]
    assert len(kept) >= 5, "too few frauds reported after the snapshot to tell"

    got = {}
    for labelled in (True, False):
        state = make_state(spec.history_days + 1, _snapshot(past, spec))
        if labelled:
            done = state.set_labels(
                late["terminal_id"].astype(str).tolist(), _ms(late["timestamp"]), np.ones(len(late))
            )
            # older than the state keeps: not found; every other one marks its row
            assert (done.changed, done.unchanged, done.not_found) == (
                len(kept), 0, len(late) - len(kept)
            )  # fmt: skip
        got[labelled] = _served(state, spec, model.feature_names, new)
    np.testing.assert_allclose(got[True], expected, rtol=1e-5, atol=1e-6)
    rates = [i for i, name in enumerate(model.feature_names) if "fraud_rate" in name]
    assert not np.allclose(got[False][:, rates], expected[:, rates], rtol=1e-5, atol=1e-6)


def test_a_late_label_marks_one_transaction_once_and_a_later_one_wins(make_state):
    state = make_state(31)
    state.append(
        ["c1", "c2", "c3"], ["t1", "t1", "t1"], np.array([1_000, 2_000, 2_000]), np.ones(3)
    )

    def terminal_labels() -> list[float]:
        return state.history_for([], ["t1"]).terminals.value.tolist()

    def label(terminal: str, time_ms: int, value: int) -> tuple[int, int, int]:
        done = state.set_labels([terminal], np.array([time_ms]), np.array([value]))
        return done.changed, done.unchanged, done.not_found

    assert label("t1", 1_000, 1) == (1, 0, 0) and terminal_labels() == [1, 0, 0]
    assert label("t1", 1_000, 1) == (0, 1, 0) and terminal_labels() == [1, 0, 0]  # idempotent
    # two transactions at one instant: a label marks one of them (either gives the same rates)
    assert label("t1", 2_000, 1) == (1, 0, 0) and terminal_labels() == [1, 1, 0]
    assert label("t1", 1_000, 0) == (1, 0, 0) and terminal_labels() == [0, 1, 0]  # overturned
    assert label("t1", 1_500, 1) == (0, 0, 1)  # no transaction then
    assert label("t9", 1_000, 1) == (0, 0, 1)  # no such terminal
    assert terminal_labels() == [0, 1, 0]


def test_a_retried_transaction_counts_once_in_the_state(make_state):
    """Same id, customer and time: held already (a retry, or scored by two versions)."""
    state = make_state(31)

    def add(customer: str, time_ms: int, tx: str | None) -> int:
        ids = None if tx is None else [tx]
        return state.append([customer], ["t1"], np.array([time_ms]), np.ones(1), None, ids)

    assert add("c1", 1_000, "a") == 0
    assert add("c1", 2_000, "b") == 0
    assert add("c1", 1_000, "a") == 1  # a retry after a later transaction: a late arrival
    assert add("c1", 2_000, "b") == 1  # a retry of the newest row
    assert add("c1", 2_000, "c") == 0  # another transaction at the same instant
    assert add("c1", 3_000, "a") == 0  # the id again at another time: another transaction
    assert add("c1", 2_000, None) == 0  # no id: never taken for a retry
    assert state.stats()["customer_rows"] == state.stats()["terminal_rows"] == 5
    history = state.history_for(["c1"], ["t1"])
    assert history.customers.time_ms.tolist() == [1_000, 2_000, 2_000, 2_000, 3_000]
    assert history.terminals.time_ms.tolist() == [1_000, 2_000, 2_000, 2_000, 3_000]


def test_a_retry_is_told_by_its_customer_and_leaves_out_its_terminal_row_too(make_state):
    """The same id and time for two customers at one terminal: two transactions, two terminal
    rows. The same id, customer and time naming another terminal: a retry, no row at all."""
    state = make_state(31)

    def add(customer: str, terminal: str) -> int:
        return state.append([customer], [terminal], np.array([7]), np.ones(1), None, ["same"])

    assert add("c1", "t1") == 0
    assert add("c2", "t1") == 0
    assert state.stats()["terminal_rows"] == 2
    assert add("c1", "t9") == 1
    assert state.stats()["terminal_rows"] == 2 and len(state.history_for([], ["t9"]).terminals) == 0
    assert state.stats()["customer_rows"] == 2


def test_a_late_label_with_its_transaction_id_marks_that_transactions_row(make_state):
    state = make_state(31)
    state.append(["c1", "c2"], ["t1", "t1"], np.array([5, 5]), np.ones(2), None, ["x", "y"])

    def label(tx: str, value: int) -> tuple[int, int, int]:
        done = state.set_labels(["t1"], np.array([5]), np.array([value]), [tx])
        return done.changed, done.unchanged, done.not_found

    assert label("y", 1) == (1, 0, 0)
    assert state.history_for([], ["t1"]).terminals.value.tolist() == [0, 1]
    assert label("x", 1) == (1, 0, 0)  # the same instant, another transaction: its own row
    assert label("x", 1) == (0, 1, 0)
    assert label("z", 1) == (0, 0, 1)  # not a transaction of that instant
    assert state.history_for([], ["t1"]).terminals.value.tolist() == [1, 1]


def test_reason_codes_are_the_batch_reason_codes(bundle):
    spec, model = bundle.spec(), bundle.model()
    frame = later_transactions(50)
    features = compute_features(frame, spec)
    matrix = features[model.feature_names].to_numpy()
    got = format_reasons(model.feature_names, matrix, model.contributions(matrix), 3)
    assert got == reason_codes(model, features, 3)
    assert any(got)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    width=st.integers(1, 9),
    n=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_reason_codes_rank_like_a_stable_sort(rows, width, n, seed):
    rng = np.random.default_rng(seed)
    # few distinct contributions: ties, zeros and negatives are common
    contributions = rng.choice([-1.5, -0.25, 0.0, 0.25, 0.5, 2.0], (rows, width)).astype(np.float32)
    values = rng.normal(0, 1000, (rows, width)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = np.nan
    names = [f"f{c}" for c in range(width)]
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :n]
    want = [
        [f"{names[c]}={float(values[i, c]):.4g} (+{float(contributions[i, c]):.2f})"
         for c in order[i] if contributions[i, c] > 0]
        for i in range(rows)
    ]  # fmt: skip
    assert format_reasons(names, values, contributions, n) == want


@pytest.mark.parametrize("method", ["approx", "exact"])
def test_explain_gives_the_batch_scores_and_contributions(bundle, method):
    model = bundle.model()
    assert model._dense_predictor() is not None  # the direct C-API path is the one tested
    features = compute_features(later_transactions(60), bundle.spec())
    matrix = features[model.feature_names].to_numpy()
    scores = model.predict(matrix)
    contributions = model.contributions(matrix, method)
    threshold = float(np.quantile(scores, 0.8))
    for min_score, rows in (
        (-np.inf, np.arange(len(matrix))),
        (threshold, np.flatnonzero(scores >= threshold)),
        (2.0, np.zeros(0, int)),
        (None, np.zeros(0, int)),
    ):
        explained = model.explain(matrix, min_score, method)
        np.testing.assert_array_equal(explained.score, scores)
        np.testing.assert_array_equal(explained.rows, rows)
        np.testing.assert_allclose(explained.contributions, contributions[rows], atol=1e-6)
    # one row at a time (the server's common case) gives the same numbers
    for i in range(5):
        one = model.explain(matrix[i : i + 1], -np.inf, method)
        assert one.score[0] == scores[i]
        np.testing.assert_allclose(one.contributions[0], contributions[i], atol=1e-6)


def test_exact_and_approx_contributions_both_add_up_to_the_log_odds(bundle):
    model = bundle.model()
    features = compute_features(later_transactions(40), bundle.spec())
    scores = model.predict(features)
    margin = np.log(scores / (1 - scores))
    for method in ("approx", "exact"):
        explained = model.explain(features, -np.inf, method)
        bias = margin - explained.contributions.sum(axis=1)
        np.testing.assert_allclose(bias, bias[0], atol=1e-4)  # the same bias for every row
    with pytest.raises(ValueError, match="contributions 'shap': choose one of"):
        model.explain(features, None, "shap")


def test_scorer_reasons_for_alerts_explains_only_alerts(bundle):
    state = _state(bundle)
    scorer = Scorer(bundle, state, 3, "alerts")
    instances = [instance(r) for r in later_transactions(120).to_dict("records")]
    batch = from_instances({"instances": instances}, TransactionSchema())
    scored = on_loop(scorer.score_async(batch))
    assert scored.alert.any() and not scored.alert.all()
    for reasons, alert in zip(scored.reasons, scored.alert.tolist(), strict=True):
        assert bool(reasons) == alert  # every alert explained, no pass
    with pytest.raises(ValueError, match="contributions 'shap'"):
        Scorer(bundle, state, 3, "all", "shap")


def _logging_detector(bundle, log_features: bool) -> tuple[FraudDetector, list[LogEntry]]:
    """A loaded detector whose log entries are collected instead of written."""
    detector = FraudDetector(
        "fraud",
        parse_model_uri(str(bundle.folder)),
        ServingConfig(replay_log=False, log_features=log_features),
    )
    detector.load()
    entries: list[LogEntry] = []
    detector.writer = SimpleNamespace(submit=entries.append)  # type: ignore[assignment]
    return detector, entries


def test_request_entries_pickle_compactly_and_give_the_same_records(bundle):
    import pickle

    detector, entries = _logging_detector(bundle, log_features=True)
    rows = [instance(r) for r in later_transactions(80).to_dict("records")]
    predict(detector, {"instances": rows[:1]})
    predict(detector, {"instances": rows[1:]})  # larger than a small column
    for entry in entries:
        copy = pickle.loads(pickle.dumps(entry))
        assert copy.records() == entry.records()


@pytest.mark.parametrize("log_features", [False, True])
def test_request_entries_written_as_columns_equal_the_records(bundle, tmp_path, log_features):
    detector, entries = _logging_detector(bundle, log_features)
    rows = [instance(r) for r in later_transactions(90).to_dict("records")]
    for row in rows[::3]:
        row.pop("merchant_category", None)  # an optional field some transactions lack
    for row in rows[60:]:
        row["channel"] = None  # given, but null in every transaction of a request
    predict(detector, {"instances": rows[:1]})
    predict(detector, {"instances": rows[1:60]})
    inputs = [
        InferInput(t["name"], t["shape"], t["datatype"], t["data"]) for t in tensors(rows[60:])
    ]
    predict(detector, InferRequest("fraud", inputs))
    assert all(e.columns is not None for e in entries)
    as_columns, as_records = LocalStore(tmp_path / "c"), LocalStore(tmp_path / "r")
    assert write_entries(as_columns, entries, []).written == 90
    plain = [LogEntry(e.count, prebuilt, (e.records(),)) for e in entries]
    assert write_entries(as_records, plain, []).written == 90
    got, want = read_frame(as_columns, "fraud"), read_frame(as_records, "fraud")
    assert "tx.merchant_category" in got and got["tx.merchant_category"].isna().any()
    assert ("feature.log_amount" in got) == log_features
    pd.testing.assert_frame_equal(got, want, check_like=True)
    assert read_records(as_columns, "fraud") == read_records(as_records, "fraud")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("log_features", [False, True])
def test_packed_log_entries_unpack_to_the_columns_of_the_request(bundle, log_features):
    """A waiting log entry is JSON bytes; unpacked, it gives exactly the request's columns."""
    detector, _ = _logging_detector(bundle, log_features)
    rows = [instance(r) for r in later_transactions(40).to_dict("records")]
    for row in rows[::3]:
        row.pop("merchant_category", None)  # missing in some: None in the block
    for i, row in enumerate(rows[20:]):
        row["account_balance"] = 1e-30 * (i + 0.1)  # odd floats, and huge finite features
    names = detector.scorer.features.names if log_features else None
    when = datetime.now(UTC)
    blocks = []
    for chunk in (rows[:1], rows[1:]):
        batch = from_instances({"instances": chunk}, detector.schema)
        scored = on_loop(detector.scorer.score_async(batch))
        args = (batch, scored, "fraud", "v7", "v2", "req-1", 0.25, "server", when, names)
        packed = pack_request(*args)
        assert all(isinstance(part, bytes) for part in packed if part is not None)
        blocks.append(packed_columns(*packed))
        assert blocks[-1] == columns_for(*args)
    assert None in blocks[1]["tx.merchant_category"]
    if log_features:  # NaN features (no history) are logged as None
        features = [v for k, vs in blocks[1].items() if k.startswith("feature.") for v in vs]
        assert None in features and max(v for v in features if v is not None) > 1e30


def test_a_request_orjson_cannot_pack_is_still_logged(bundle):
    """FastAPI's parser (KServe's V2 route) accepts a lone surrogate; orjson cannot write it."""
    detector, entries = _logging_detector(bundle, log_features=False)
    row = instance(later_transactions(1).to_dict("records")[0])
    row["transaction_id"] = "tx-\ud800"
    inputs = [InferInput(t["name"], t["shape"], t["datatype"], t["data"]) for t in tensors([row])]
    response = predict(detector, InferRequest("fraud", inputs))
    assert response.outputs[0].data.tolist() == ["tx-\ud800"]
    (entry,) = entries
    assert entry.columns is columns_for
    assert entry.records()[0]["transaction"]["transaction_id"] == "tx-\ud800"


def test_a_waiting_log_entry_is_one_object_for_the_garbage_collector(bundle):
    detector, entries = _logging_detector(bundle, log_features=False)
    rows = [instance(r) for r in later_transactions(3).to_dict("records")]
    predict(detector, {"instances": rows})
    gc.collect()
    (entry,) = entries
    assert not hasattr(entry, "__dict__") and not gc.is_tracked(entry.args)
    assert entry.block()["id"] == [f"{entry.block()['id'][0][:-2]}-{i}" for i in range(3)]


def test_a_block_that_cannot_be_written_falls_back_to_records(bundle, tmp_path):
    detector, entries = _logging_detector(bundle, log_features=False)
    rows = [instance(r) for r in later_transactions(10).to_dict("records")]
    predict(detector, {"instances": rows[:4]})
    detector.name = ""  # no key can be made of an empty model name
    predict(detector, {"instances": rows[4:]})
    result = write_entries(LocalStore(tmp_path), entries, [])
    assert (result.written, result.invalid) == (4, 6)
    assert len(read_records(LocalStore(tmp_path), "fraud")) == 4


def test_state_memory_is_bounded_by_the_retention_window(make_state):
    state = make_state(2, sweep_per_append=50)
    day = 86_400_000
    for d in range(10):  # 10 days, a new customer per day plus one regular
        state.append([f"c{d}", "regular"], ["t", "t"], np.array([d * day, d * day + 1]), np.ones(2))
    stats = state.stats()
    assert stats["customers"] <= 4 and stats["customer_rows"] <= 6
    rows = state.history_for(["regular"], ["t"])
    assert rows.customers.time_ms.min() >= 7 * day
    assert (np.diff(rows.terminals.time_ms) >= 0).all()
    state.append(["regular"], ["t"], np.array([8 * day + 5]), np.ones(1))  # late arrival
    assert (np.diff(state.history_for(["regular"], []).customers.time_ms) >= 0).all()


def test_a_late_arrival_older_than_the_retention_is_not_kept(make_state):
    day = 86_400_000
    state = make_state(2)
    state.append(["c"], ["t"], np.array([5 * day]), np.ones(1))
    state.append(["c"], ["t"], np.array([1 * day]), np.ones(1))  # before the floor (3 days)
    state.append(["c"], ["t"], np.array([4 * day]), np.ones(1))  # late, but within it
    history = state.history_for(["c"], ["t"])
    assert history.customers.time_ms.tolist() == history.terminals.time_ms.tolist()
    assert history.customers.time_ms.tolist() == [4 * day, 5 * day]
    assert state.stats()["customer_rows"] == state.stats()["terminal_rows"] == 2


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 5 * 86_400_000)), max_size=9),
        max_size=8,
    )
)
def test_state_keeps_every_recent_row_sorted_and_counts_them(make_state, batches):
    state = make_state(2, sweep_per_append=1)
    seen: list[tuple[str, int]] = []
    for batch in batches:
        ids = [entity for entity, _ in batch]
        times = np.array([t for _, t in batch], dtype=np.int64)
        state.append(ids, ids, times, times.astype(float))
        seen += batch
    floor = max((t for _, t in seen), default=0) - 2 * 86_400_000
    history = state.history_for(list("abcd"), list("abcd"))
    for rows, counted in (
        (history.customers, state.stats()["customer_rows"]),
        (history.terminals, state.stats()["terminal_rows"]),
    ):
        assert len(rows.time_ms) == counted  # the counter is exact
        for g, entity in enumerate("abcd"):
            got = rows.time_ms[rows.group == g]
            assert (np.diff(got) >= 0).all()
            recent = sorted(t for e, t in seen if e == entity and t >= floor)
            assert [t for t in got.tolist() if t >= floor] == recent


# -- the model in-process -----------------------------------------------------------------


def test_load_refuses_a_tampered_bundle_naming_the_file(bundle, tmp_path):
    import shutil

    from kserve.errors import ModelMissingError

    copy = tmp_path / "bundle"
    shutil.copytree(bundle.folder, copy)
    (copy / "threshold.json").write_text('{"threshold": 0.0}')
    model = FraudDetector("fraud", parse_model_uri(str(copy)))
    with pytest.raises(ModelMissingError, match=r"threshold\.json has sha256"):
        model.load()
    assert not model.ready


def _from_store(tmp_path_factory, **kw) -> tuple[FraudDetector, CollectorRegistry]:
    trained = shared_model(tmp_path_factory)
    registry = CollectorRegistry()
    model = FraudDetector(
        "fraud",
        parse_model_uri(f"{trained.store}#{trained.name}:champion"),
        ServingConfig(log_process=False, replay_log=False),
        metrics=ServingMetrics(registry),
        **kw,
    )
    return model, registry


def _downloads(where) -> list:
    return sorted(where.glob("fraudops-bundle-*"))


def test_a_failed_load_leaves_nothing_behind_and_a_later_one_works(
    tmp_path_factory, tmp_path, monkeypatch
):
    import tempfile

    import serving.model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where downloads go
    model, registry = _from_store(tmp_path_factory)
    real = serving.model.Scorer

    def broken(*args, **kwargs):
        raise RuntimeError("the scorer exploded")

    monkeypatch.setattr(serving.model, "Scorer", broken)  # after the download: not a store error
    for _ in range(3):
        with pytest.raises(RuntimeError, match="exploded"):
            model.load_bundle()
        assert not _downloads(tmp_path)
    assert model.state is None and model.scorer is None and not model.ready
    reason = "Its bundle failed to load (attempt 3): RuntimeError: the scorer exploded"
    assert model.not_ready_reason() == reason
    labels = {"model": "fraud"}
    assert registry.get_sample_value("fraudops_model_load_failures_total", labels) == 3
    assert registry.get_sample_value("fraudops_model_ready", labels) == 0

    monkeypatch.setattr(serving.model, "Scorer", real)
    assert model.load_bundle() and model.ready and model.not_ready_reason() == ""
    assert len(_downloads(tmp_path)) == 1 and model.state is not None
    assert registry.get_sample_value("fraudops_model_ready", labels) == 1
    model.close()
    assert not _downloads(tmp_path)
    assert registry.get_sample_value("fraudops_model_ready", labels) == 0


def test_a_load_under_way_when_the_model_closes_keeps_nothing(
    tmp_path_factory, tmp_path, monkeypatch
):
    import tempfile
    import threading

    from kserve.errors import ModelMissingError

    import serving.model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, _ = _from_store(tmp_path_factory, log_store=LocalStore(tmp_path / "log"))
    entered, release = threading.Event(), threading.Event()
    real = serving.model.Scorer

    def slow(*args, **kwargs):  # a load still under way (downloaded) when the server stops
        entered.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(serving.model, "Scorer", slow)
    errors: list[Exception] = []

    def load() -> None:
        try:
            model.load_bundle()
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=load)
    thread.start()
    assert entered.wait(30) and len(_downloads(tmp_path)) == 1
    started = time.monotonic()
    model.close()
    assert time.monotonic() - started < 1  # close() does not wait for the load
    assert not _downloads(tmp_path)  # removed at once: at exit the load thread just dies
    release.set()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ModelMissingError)
    assert not model.ready and model.writer is None and not _downloads(tmp_path)
    with pytest.raises(ModelMissingError, match="was stopped; it is not loaded again"):
        model.load_bundle()
    assert model.not_ready_reason().startswith("It was stopped")


def test_a_load_finishing_as_the_model_closes_keeps_nothing(
    tmp_path_factory, tmp_path, monkeypatch
):
    import tempfile
    import threading

    from kserve.errors import ModelMissingError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, registry = _from_store(tmp_path_factory, log_store=LocalStore(tmp_path / "log"))

    def close_now() -> None:  # the last moment: the load holds its lock and is about to be ready
        closer = threading.Thread(target=model.close)
        closer.start()
        closer.join(10)
        assert model.closed

    model.on_ready = close_now
    with pytest.raises(ModelMissingError, match="was stopped while it was loading"):
        model.load_bundle()
    assert not model.ready and model.not_ready_reason().startswith("It was stopped")
    assert model.writer is not None and model.writer._closing  # started, then closed
    assert not _downloads(tmp_path)
    assert registry.get_sample_value("fraudops_model_ready", {"model": "fraud"}) == 0


def test_kserves_load_hook_never_loads_when_loads_are_in_the_background(bundle):
    from kserve.errors import ModelNotReady

    model = FraudDetector("fraud", parse_model_uri(str(bundle.folder)))
    model.background_loads, model.retry_seconds = True, 30.0
    with pytest.raises(
        ModelNotReady, match=r"fraud is not ready\. Its bundle is loading\.$"
    ) as info:
        model.load()  # what KServe's get_model calls inside a request
    assert info.value.reason == str(info.value)  # what KServe's gRPC interceptor sends
    assert model.load_attempts == 0
    with pytest.raises(ModelNotReady):  # metadata (gRPC) too: the inputs come from the bundle
        model.get_input_types()
    assert model.load_bundle() and model.load() is True
    model.close()


@pytest.mark.parametrize(
    ("seconds", "ok"),
    [
        *((seconds, True) for seconds in (0, 0.3, 30)),
        *((seconds, False) for seconds in (-1, 0.01, 1e300, float("nan"), float("inf"))),
    ],
)
def test_the_retry_interval_is_zero_or_a_sane_number_of_seconds(seconds, ok):
    from serving.load_retry import LoadRetry, check_interval

    assert (check_interval(seconds) is None) is ok
    if not ok:
        assert "--load_retry_seconds must be 0" in check_interval(seconds)
        with pytest.raises(ValueError):
            LoadRetry(None, seconds)


def test_a_restarted_server_replays_its_inference_log_into_the_online_state(bundle, tmp_path):
    spec, model = bundle.spec(), bundle.model()
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    new = later_transactions(240, seed=9)
    expected = model.predict(compute_features(new, spec, history=snapshot))[150:]
    rows = [instance(r) for r in new.to_dict("records")]
    log_store = LocalStore(tmp_path / "log")

    def server(**config) -> FraudDetector:
        detector = FraudDetector(
            "fraud",
            parse_model_uri(str(bundle.folder)),
            ServingConfig(log_process=False, **config),
            log_store=log_store,
        )
        detector.load()
        return detector

    first = server()
    predict(first, {"instances": rows[:100]}, {})
    for row in rows[100:150]:
        predict(first, {"instances": [row]}, {})
    first.close()  # the log is written on shutdown
    second = server()
    got = [predict(second, {"instances": [r]}, {})["predictions"][0]["score"] for r in rows[150:]]
    second.close()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    forgetful = server(replay_log=False)
    again = [
        predict(forgetful, {"instances": [r]}, {})["predictions"][0]["score"] for r in rows[150:]
    ]
    forgetful.close()
    assert not np.allclose(again, expected, rtol=1e-6)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # overflow is expected, not warned about
def test_a_request_cancelled_while_it_waits_for_redis_is_still_added_and_logged(bundle, tmp_path):
    """A gRPC deadline or a client gone cancels ``predict`` while it awaits Redis: the
    transaction that Redis takes is in the inference log too (replays and retries rely on
    it), as before ``predict`` awaited anything."""
    process, url = start_redis_server()
    name = f"fraud-{uuid.uuid4().hex[:8]}"
    detector = FraudDetector(
        name,
        parse_model_uri(str(bundle.folder)),
        ServingConfig(replay_log=False, log_process=False, state_redis_url=url),
        log_store=LocalStore(tmp_path / "log"),
    )
    detector.load()
    rows_before = detector.state.stats()["customer_rows"]

    async def cancelled_while_waiting() -> None:
        process.send_signal(signal.SIGSTOP)
        task = asyncio.ensure_future(detector.predict({"instances": [GOOD]}, {}))
        await asyncio.sleep(0.2)  # waiting for the stopped Redis
        task.cancel()
        process.send_signal(signal.SIGCONT)
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # the rest of the request goes on

    try:
        on_loop(cancelled_while_waiting())
        assert detector.state.stats()["customer_rows"] == rows_before + 1
        detector.close()  # the log is written on shutdown
        records = read_records(LocalStore(tmp_path / "log"), name)
        assert [r["transaction"]["transaction_id"] for r in records] == [GOOD["transaction_id"]]
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_a_feature_that_overflows_float32_is_a_client_error_and_leaves_no_trace(
    bundle, shared, request
):
    """In Redis a transaction whose own features overflow never reaches it (its watermark
    stays although the transaction is the newest); one whose windows overflow goes in with
    the history read, and comes out again."""
    url = request.getfixturevalue("redis_url") if shared else None
    detector = FraudDetector(
        f"fraud-{uuid.uuid4().hex[:8]}",
        parse_model_uri(str(bundle.folder)),
        ServingConfig(replay_log=False, state_redis_url=url),
    )
    detector.load()
    before = detector.state.stats()
    tiny = {**GOOD, "amount": 1e15, "account_balance": 5e-324}  # beyond even float64
    with pytest.raises(InvalidTransactions) as info:
        predict(detector, {"instances": [{**GOOD, "transaction_id": "t-0"}, tiny]}, {})
    assert "transaction 1 ('t-1'): feature 'amount_to_balance' overflows" in str(info.value)
    assert info.value.status == 400
    assert detector.state.stats() == before  # neither transaction entered the state
    if shared:
        watermark = detector.state.prefix + "watermark"
        before_watermark = detector.state.redis.get(watermark)
        now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        with pytest.raises(InvalidTransactions):
            predict(detector, {"instances": [{**tiny, "timestamp": now}]}, {})
        assert detector.state.redis.get(watermark) == before_watermark
    # an amount over a minute mean of the customer's window: refused once the history is read
    minute = {**GOOD, "transaction_id": "t-minute", "customer_id": "C-minute", "amount": 1e-30}
    predict(detector, {"instances": [minute]}, {})
    kept = detector.state.stats()
    huge = {**minute, "transaction_id": "t-huge", "timestamp": "2026-05-16T10:05:00Z"}
    huge.update(amount=1e15, account_balance=1e15)
    with pytest.raises(InvalidTransactions, match=r"'t-huge'.* overflows"):
        predict(detector, {"instances": [huge]}, {})
    assert detector.state.stats() == kept  # in Redis: added with the read, then taken out
    ok = predict(detector, {"instances": [{**tiny, "account_balance": 1e-3}]}, {})
    after = detector.state.stats()
    if shared:
        drop_version(detector.state.redis, detector.name, detector.version)
    detector.close()
    assert 0 <= ok["predictions"][0]["score"] <= 1
    assert after["customer_rows"] == before["customer_rows"] + 2


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_batch_scoring_names_the_transactions_whose_features_overflow(bundle):
    frame = later_transactions(5, seed=3)
    frame.loc[2, ["amount", "account_balance"]] = [1e15, 1e-30]
    with pytest.raises(
        ValueError, match=r"overflow the model's float32 input for '.+' \(amount_to_balance\)"
    ):
        score_frame(bundle, frame)


def test_a_log_record_with_an_unreadable_timestamp_does_not_stop_a_restart(bundle, tmp_path):
    log_store = LocalStore(tmp_path / "log")
    now = datetime.now(UTC)
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    end = pd.to_datetime(snapshot["timestamp"], utc=True).max().to_pydatetime()
    records = [
        make_record(
            model="fraud",
            version=bundle.version,
            transaction={
                "transaction_id": f"t-{i}",
                "timestamp": stamp,
                "customer_id": f"c-replayed-{i}",
                "terminal_id": "t-replayed",
                "amount": 5.0,
            },
            score=0.1,
            decision="pass",
            time=now,
        )
        for i, stamp in enumerate(
            [
                (end + timedelta(hours=1)).isoformat(),
                "2026-W20-6",  # Python reads it, pandas does not
                (end + timedelta(hours=2)).isoformat(),
            ]
        )
    ]
    write_batch(log_store, records)
    fresh = FraudDetector(
        "fraud", parse_model_uri(str(bundle.folder)), ServingConfig(replay_log=False)
    )
    fresh.load()
    restarted = FraudDetector(
        "fraud",
        parse_model_uri(str(bundle.folder)),
        ServingConfig(log_process=False),
        log_store=log_store,
    )
    restarted.load()
    assert restarted.ready
    before, after = fresh.state.stats(), restarted.state.stats()
    fresh.close()
    restarted.close()
    assert after["customers"] - before["customers"] == 2  # the two readable records
    assert after["customer_rows"] - before["customer_rows"] == 2


def test_model_uri_forms(tmp_path):
    store = parse_model_uri("s3://fraudops/registry#fraud-detector:v3")
    assert (store.store_uri, store.name, store.ref) == (
        "s3://fraudops/registry",
        "fraud-detector",
        "v3",
    )
    assert parse_model_uri(f"{tmp_path}#fraud").ref == "champion"
    prefix = parse_model_uri("s3://fraudops/registry/models/fraud-detector/v12/")
    assert (prefix.store_uri, prefix.name, prefix.ref) == (
        "s3://fraudops/registry",
        "fraud-detector",
        "v12",
    )
    assert parse_model_uri(f"file://{tmp_path}").folder == tmp_path
    for bad in ("s3://fraudops", "#", str(tmp_path / "missing"), "s3://b/models/x/latest"):
        with pytest.raises(ValueError, match="model_uri"):
            parse_model_uri(bad)


@pytest.mark.parametrize(
    "model, expected",
    [
        ("champion", "s3://b#fraud:champion"),  # an alias or version of --model-name
        ("canary", "s3://b#fraud:canary"),
        ("v12", "s3://b#fraud:v12"),
        ("latest", "s3://b#fraud:latest"),
        ("other", "s3://b#other:champion"),  # a bare name: that model's champion
        ("other:v2", "s3://b#other:v2"),
        ("other:canary", "s3://b#other:canary"),
        ("v12x", "s3://b#v12x:champion"),  # not a version: a name
    ],
)
def test_fraudops_serve_reads_a_version_alias_or_name(model, expected):
    uri = model_uri_for(model, "fraud", "s3://b")
    assert uri == expected
    source = parse_model_uri(uri)
    assert f"{source.store_uri}#{source.name}:{source.ref}" == expected


def test_fraudops_serve_takes_a_bundle_folder(tmp_path, monkeypatch):
    assert model_uri_for(str(tmp_path), "fraud", "s3://b") == str(tmp_path)
    (tmp_path / "champion").mkdir()
    monkeypatch.chdir(tmp_path)  # a folder named like the alias does not shadow it
    assert model_uri_for("champion", "fraud", "s3://b") == "s3://b#fraud:champion"
    assert model_uri_for("./champion", "fraud", "s3://b") == "./champion"


# -- inference log ------------------------------------------------------------------------


def _entry(i: int, n: int = 1) -> LogEntry:
    when = datetime(2026, 5, 16, tzinfo=UTC) + timedelta(seconds=i)

    def build():
        return [
            make_record(
                model="fraud",
                version="v1",
                transaction={"transaction_id": f"t{i}-{j}", "amount": 1.0},
                score=0.1,
                decision="pass",
                time=when,
            )
            for j in range(n)
        ]

    return LogEntry(n, build)


def test_writer_blocks_briefly_then_drops_and_counts_when_full(tmp_path):
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    writer = InferenceLogWriter(
        LocalStore(tmp_path), max_records=10, flush_interval=60, block_seconds=0.05, metrics=metrics
    )  # not started: nothing drains the buffer
    assert all(writer.submit(_entry(i, 5)) for i in range(2))
    started = time.perf_counter()
    assert not writer.submit(_entry(3, 1))
    assert time.perf_counter() - started >= 0.04
    assert writer.dropped == 1
    assert (
        registry.get_sample_value("fraudops_inference_log_dropped_total", {"reason": "buffer_full"})
        == 1
    )
    writer.close()
    assert len(read_records(LocalStore(tmp_path), "fraud")) == 10


def test_writer_retries_a_failing_store_and_loses_nothing_on_close(tmp_path):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    writer = InferenceLogWriter(LocalStore(blocker), flush_interval=0.05).start()
    for i in range(20):
        writer.submit(_entry(i, 3))
    deadline = time.monotonic() + 5
    while writer.queued < 60 or writer.written:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)  # a few failed attempts
    blocker.unlink()  # the store comes back
    writer.close(timeout=10)
    assert writer.written == 60 and writer.dropped == 0
    assert len(read_records(LocalStore(blocker), "fraud")) == 60


def test_writer_counts_every_record_it_gives_up_on_when_the_store_stays_down(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.log_writer.CHUNK_RECORDS", 6)  # several chunks a flush
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    registry = CollectorRegistry()
    writer = InferenceLogWriter(
        LocalStore(blocker), flush_interval=60, metrics=ServingMetrics(registry)
    )
    for i in range(10):
        writer.submit(_entry(i, 3))
    writer.close(timeout=0.5)
    assert (writer.written, writer.dropped, writer.queued) == (0, 30, 0)
    dropped = registry.get_sample_value(
        "fraudops_inference_log_dropped_total", {"reason": "store_unavailable"}
    )
    assert dropped == 30


def test_writer_process_writes_everything_and_drops_only_an_unwritable_record(tmp_path):
    store = LocalStore(tmp_path)
    writer = InferenceLogWriter(store, flush_interval=60, process=True).start()
    for i in range(30):  # pre-built records: the entry travels to the helper process
        writer.submit(LogEntry(3, prebuilt, (_entry(i, 3).records(),)))
    bad = {**_entry(99).records()[0], "model": ""}  # no key can be made of an empty name
    writer.submit(LogEntry(1, prebuilt, ([bad],)))
    writer.close()
    assert (writer.written, writer.dropped) == (90, 1)
    assert len(read_records(store, "fraud")) == 90


def test_array_histogram_matches_prometheus_histogram():
    values = np.array([0.0, 0.001, 0.004, 0.5, 0.99, 1.0, 0.3])
    mine, theirs = CollectorRegistry(), CollectorRegistry()
    ArrayHistogram("s", "d", ("m",), (0.001, 0.5, 1.0), mine).observe(("x",), values)
    reference = Histogram("s", "d", ("m",), buckets=(0.001, 0.5, 1.0), registry=theirs)
    for v in values:
        reference.labels("x").observe(v)
    lines = [
        line for line in generate_latest(theirs).decode().splitlines() if "_created" not in line
    ]
    assert generate_latest(mine).decode().splitlines() == lines


# -- log sink pairing -----------------------------------------------------------------------


def _event(kind: str, body: dict, eid: str, when: datetime) -> Event:
    return Event(
        eid, kind, "http://logger/", when, "application/json", json.dumps(body).encode(), "fraud"
    )


def test_sink_pairs_in_either_order_and_expires_orphans():
    pairer = EventPairer(timeout=10)
    t0 = datetime(2026, 5, 16, tzinfo=UTC)
    req = _event(REQUEST_TYPE, {"instances": [GOOD]}, "a", t0)
    res = _event(
        RESPONSE_TYPE,
        {
            "model_name": "fraud",
            "model_version": "v1",
            "predictions": [
                {
                    "transaction_id": "t-1",
                    "score": 0.9,
                    "decision": "alert",
                    "model_version": "v1",
                    "reasons": ["amount=12.5 (+1.00)"],
                }
            ],
        },
        "a",
        t0 + timedelta(milliseconds=3),
    )
    assert pairer.add(res) is None
    pair = pairer.add(req)
    assert pair == (req, res)
    (record,) = records_from_pair(*pair)
    assert record["id"] == "a" and record["decision"] == "alert" and record["latency_ms"] == 3.0
    assert record["transaction"]["channel"] == "online" and record["source"] == "http://logger/"
    assert pairer.add(_event(REQUEST_TYPE, {"instances": [GOOD]}, "orphan", t0)) is None
    assert pairer.expire(now=time.monotonic() + 11) == 1 and len(pairer) == 0


def _v2_response(decisions: list[str], scores: tuple[float, ...] = (0.9,)) -> dict:
    """A V2 response with the outputs a request asked for: score and decision, no ids."""
    return {
        "model_name": "fraud",
        "model_version": "v1",
        "id": "r",
        "outputs": [
            {"name": "score", "shape": [len(scores)], "datatype": "FP64", "data": list(scores)},
            {"name": "decision", "shape": [len(decisions)], "datatype": "BYTES", "data": decisions},
        ],
    }


def test_sink_logs_a_v2_pair_whose_request_asked_for_some_outputs_only():
    t0 = datetime(2026, 5, 16, tzinfo=UTC)
    request = {"inputs": tensors([GOOD]), "outputs": [{"name": "score"}, {"name": "decision"}]}
    req = _event(REQUEST_TYPE, request, "a", t0)
    (record,) = records_from_pair(req, _event(RESPONSE_TYPE, _v2_response(["alert"]), "a", t0))
    assert record["transaction"]["transaction_id"] == "t-1" and record["decision"] == "alert"
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        EventPairer(max_pending=0)


def _v1_response(**change) -> dict:
    prediction = {"transaction_id": "t-1", "score": 0.9, "decision": "alert", "reasons": []}
    return {"model_name": "fraud", "model_version": "v1", "predictions": [{**prediction, **change}]}


@pytest.mark.parametrize(
    "request_body, response_body, expected",
    [
        ({"instances": [GOOD]}, _v1_response(decision="maybe"), "decision must be 'alert' or"),
        ({"instances": [GOOD]}, _v1_response(transaction_id="t-2"), "'t-1' in the request but"),
        (
            {"instances": [GOOD]},
            {**_v1_response(), "model_version": {"v": 1}},
            "model_version must be a string",
        ),
        ({"inputs": [5]}, {"outputs": []}, "malformed V2 request"),
        ({"inputs": tensors([GOOD])}, _v2_response(["alert", "pass"]), "1 score(s) but 2 decision"),
        ({"instances": [GOOD]}, {"model_name": "fraud", "predictions": []}, "the response 0"),
        (
            {"instances": [GOOD, {**GOOD, "transaction_id": "t-2"}]},
            _v1_response(),
            "2 transaction(s), the response 1",
        ),
    ],
)
def test_sink_refuses_a_pair_that_is_not_a_fraudops_pair(request_body, response_body, expected):
    t0 = datetime(2026, 5, 16, tzinfo=UTC)
    req = _event(REQUEST_TYPE, request_body, "a", t0)
    res = _event(RESPONSE_TYPE, response_body, "a", t0)
    with pytest.raises(SinkError, match=re.escape(expected)):
        records_from_pair(req, res)


def test_sink_keeps_at_most_max_pending_events_and_counts_the_evicted():
    registry = CollectorRegistry()
    pairer = EventPairer(timeout=60, metrics=ServingMetrics(registry), max_pending=3)
    t0 = datetime(2026, 5, 16, tzinfo=UTC)
    for i in range(5):
        assert pairer.add(_event(REQUEST_TYPE, {"instances": [GOOD]}, f"e{i}", t0)) is None
    assert len(pairer) == 3
    evicted = registry.get_sample_value(
        "fraudops_log_sink_events_total", {"type": "request", "outcome": "evicted"}
    )
    assert evicted == 2
    response = _event(RESPONSE_TYPE, _v1_response(), "e0", t0)
    assert pairer.add(response) is None  # e0 was evicted: the response waits alone
    assert pairer.add(_event(RESPONSE_TYPE, _v1_response(), "e4", t0)) is not None


def test_sink_answers_an_oversized_event_413_and_keeps_serving(tmp_path):
    import asyncio

    import httpx

    app = create_app(LocalStore(tmp_path), max_body_bytes=1_000)

    async def exchange() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # the app alone: no lifespan, no writer
        async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
            too_big = await client.post("/", content=b"x" * 1_001, headers={"ce-id": "a"})
            return too_big, await client.get("/healthz")

    too_big, health = asyncio.run(exchange())
    assert too_big.status_code == 413 and "1,000 bytes" in too_big.json()["error"]
    assert health.status_code == 200


def test_without_latency_logging_kserve_timing_middleware_is_left_out():
    import fastapi
    from kserve.protocol.rest.server import RESTServer
    from timing_asgi import TimingMiddleware

    from serving.__main__ import LocalModelServer

    LocalModelServer(http_port=0, enable_grpc=False, enable_latency_logging=False)
    app = fastapi.FastAPI()
    RESTServer._add_middlewares(SimpleNamespace(access_log_format=None), app)
    assert TimingMiddleware not in [m.cls for m in app.user_middleware]


def _kserve_rest(response: InferResponse) -> tuple[bytes, int | None]:
    """What KServe's V2 route writes for ``response`` (``to_rest`` through its pydantic model)."""
    rest, json_length = response.to_rest()
    if isinstance(rest, bytes):
        return rest, json_length
    return InferenceResponse.model_validate(rest).model_dump_json().encode(), None


def _outputs(kind: str) -> tuple[list[InferOutput], dict]:
    n = 3
    reasons = np.full((n, 2), "", dtype=object)
    reasons[0] = ["amount=900 (+1.2)", "channel=web (+0.1)"]
    reasons[2, 0] = "é ünïcode"
    outputs = [
        InferOutput("transaction_id", [n], "BYTES", np.array(["a", "b", "c"], object)),
        InferOutput("score", [n], "FP64", np.array([0.1, 0.25, 1e-300])),
        InferOutput("reasons", [n, 2], "BYTES", reasons),
        InferOutput("count", [n, 1], "INT64", np.array([[1], [2], [-3]])),
        InferOutput("flag", [n], "BOOL", np.array([True, False, True])),
        InferOutput("fp32", [n], "FP32", np.array([0.5, 1.5, 2.5], np.float32)),
    ]
    extra: dict = {}
    if kind == "bytes":  # to_rest decodes bytes elements
        outputs[0] = InferOutput(
            "transaction_id", [n], "BYTES", np.array([b"a", b"b", b"c"], object)
        )
    elif kind == "shape":  # to_rest refuses a shape that is not the array's
        outputs[1] = InferOutput("score", [n + 1], "FP64", np.array([0.1, 0.25, 1e-300]))
    elif kind == "datatype":  # ...and a datatype that is not the array's
        outputs[1] = InferOutput("score", [n], "FP32", np.array([0.1, 0.25, 1e-300]))
    elif kind == "list":  # data given as a list, not an array
        outputs[1] = InferOutput("score", [n], "FP64", [0.1, 0.25, 1e-300])
    elif kind == "output parameters":
        outputs[1] = InferOutput("score", [n], "FP64", np.array([0.1, 0.2, 0.3]), {"unit": "p"})
    elif kind == "parameters":
        extra["parameters"] = {"note": "x"}
    elif kind == "binary":
        extra["use_binary_outputs"] = True
    elif kind == "requested":
        extra["requested_outputs"] = [RequestedOutput("score", {})]
    return outputs, extra


@pytest.mark.parametrize(
    "kind",
    [
        "plain",
        "bytes",
        "shape",
        "datatype",
        "list",
        "output parameters",
        "parameters",
        "binary",
        "requested",
    ],
)
def test_direct_v2_responses_are_what_kserves_route_writes(kind):
    """The direct route's V2 body is KServe's, whether it writes it itself or leaves it to
    KServe's ``to_rest``; KServe's refusals stay KServe's."""
    outputs, extra = _outputs(kind)
    ours = InferResponse("req-1", "fraud-detector", outputs, model_version="v3", **extra)
    outputs, extra = _outputs(kind)
    theirs = InferResponse("req-1", "fraud-detector", outputs, model_version="v3", **extra)
    try:
        expected, json_length = _kserve_rest(theirs)
    except Exception as e:  # KServe refuses it: so must the direct route, the same way
        with pytest.raises(type(e), match=re.escape(str(e))):
            encode_response(ours)
        assert kind in ("shape", "datatype")
        return
    body, headers = encode_response(ours)
    headers = dict(headers)
    if json_length is not None:
        assert body == expected
        assert headers[b"inference-header-content-length"] == str(json_length).encode()
        assert headers[b"content-type"] == b"application/octet-stream"
    else:
        assert json.loads(body) == json.loads(expected)
        assert headers == {b"content-type": b"application/json"}
    if kind == "plain":  # written by fraudops, not by KServe's to_rest (which sets data lists)
        assert isinstance(ours.outputs[0].data, np.ndarray)
        assert json.loads(body)["outputs"][2]["data"][4] == "é ünïcode"


@pytest.mark.parametrize(
    ("path", "headers", "taken"),
    [
        ("/v2/models/m/infer", [(b"content-type", b"application/json")], True),
        ("/v1/models/m:predict", [(b"host", b"x")], True),
        ("/v2/models/m/versions/v1/infer", [], False),
        ("/v2/models/m/infer", [(b"content-type", b"application/octet-stream")], False),
        ("/v2/models/m/infer", [(b"inference-header-content-length", b"10")], False),
        ("/v1/models/m:predict", [(b"ce-id", b"1"), (b"ce-type", b"t")], False),
        ("/v1/models/m:predict", [(b"content-type", b"application/cloudevents+json")], False),
    ],
)
def test_direct_routes_take_only_plain_json_scoring_requests(path, headers, taken):
    assert takes({"path": path, "headers": headers}) is taken


_JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
_ABSENT = object()
_TOP_CHANGES = {
    "id": st.one_of(st.just(_ABSENT), st.none(), st.text(max_size=3), st.integers(0, 9)),
    "parameters": st.sampled_from([_ABSENT, None, {}, {"priority": 1}, []]),
    "outputs": st.sampled_from([_ABSENT, None, [], [{"name": "score"}], ""]),
    "inputs": st.one_of(st.just(_ABSENT), _JSON_VALUES, st.lists(_JSON_VALUES, max_size=2)),
    "colour": _JSON_VALUES,
}
_INPUT_CHANGES = {
    "name": st.one_of(st.just(_ABSENT), st.just("colour"), _JSON_VALUES),
    "datatype": st.one_of(
        st.just(_ABSENT), st.sampled_from(["FP16", "fp64", "INT8"]), _JSON_VALUES
    ),
    "shape": st.one_of(
        st.just(_ABSENT),
        _JSON_VALUES,
        st.sampled_from([[True, 1], [2.0], [2.5], ["2"], [-1], [2, 1], [2, 1, 1], [], [2, False]]),
        st.lists(
            st.one_of(st.integers(-2, 3), st.booleans(), st.floats(0, 3), st.just("1")), max_size=3
        ),
    ),
    "data": st.one_of(
        st.just(_ABSENT), _JSON_VALUES, st.lists(_JSON_VALUES, max_size=3), st.just([[1.5]])
    ),
    "parameters": st.sampled_from([_ABSENT, None, {}, {"binary_data_size": 3}, "x"]),
    "colour": _JSON_VALUES,
}


@st.composite
def _v2_documents(draw) -> object:
    """A plain V2 request (two transactions) with up to three of its values changed."""
    row = instance(GOOD)
    document: dict = {"id": "r-1", "inputs": tensors([row, {**row, "transaction_id": "t-2"}])}
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            key = draw(st.sampled_from(sorted(_TOP_CHANGES)))
            document[key] = draw(_TOP_CHANGES[key])
        elif isinstance(document.get("inputs"), list) and document["inputs"]:
            tensor = draw(st.sampled_from(document["inputs"]))
            if isinstance(tensor, dict):
                key = draw(st.sampled_from(sorted(_INPUT_CHANGES)))
                tensor[key] = draw(_INPUT_CHANGES[key])
    if draw(st.integers(0, 20)) == 0:
        return draw(st.one_of(_JSON_VALUES, st.lists(_JSON_VALUES, max_size=2)))
    return _without_absent(document)


def _without_absent(value):
    if isinstance(value, dict):
        return {k: _without_absent(v) for k, v in value.items() if v is not _ABSENT}
    if isinstance(value, list):
        return [_without_absent(v) for v in value]
    return value


def _kserve_v2_request(body: bytes) -> object:
    """What KServe's V2 route builds: pydantic's InferenceRequest, then InferRequest."""
    from fastapi.exceptions import RequestValidationError
    from kserve.protocol.rest.v2_datamodels import InferenceRequest
    from pydantic import ValidationError

    try:
        parsed = InferenceRequest.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    return InferRequest.from_inference_request(parsed, "fraud-detector")


def _described(build, body: bytes) -> str:
    try:
        r = build(body)
    except Exception as e:  # the refusal itself is compared
        detail = e.errors() if hasattr(e, "errors") else str(e)
        return f"{type(e).__name__}: {detail!r}"
    outputs = [(o.name, o.parameters) for o in r.request_outputs or []]
    inputs = [(i.name, i.shape, i.datatype, i.data, i.parameters) for i in r.inputs]
    return repr((r.id, r.model_name, r.parameters, outputs, inputs, r.from_grpc))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_v2_documents())
def test_direct_v2_parser_builds_what_kserves_route_builds(document):
    """``parse_v2`` (orjson straight into InferRequest when the body is plain) gives the same
    request, or the same refusal, as pydantic and ``from_inference_request`` do on KServe's
    route: any value pydantic would coerce or refuse goes to pydantic. NaN and Infinity
    literals, which pydantic reads and orjson refuses, are in the bodies too."""
    body = json.dumps(document).encode()
    assert _described(lambda b: parse_v2(b, "fraud-detector"), body) == _described(
        _kserve_v2_request, body
    )


@pytest.mark.parametrize("number", ["-9223372036854775809", "18446744073709551616", "1" * 30])
def test_direct_v2_parser_keeps_integers_beyond_64_bits_exact(number):
    """orjson reads these as floats; KServe's route (pydantic) as the exact integers."""
    tensor = {"name": "amount", "shape": [1], "datatype": "FP64", "data": ["N"]}
    body = json.dumps({"inputs": [tensor]}).replace('"N"', number).encode()
    assert parse_v2(body, "fraud-detector").inputs[0].data == [int(number)]
    assert _described(lambda b: parse_v2(b, "fraud-detector"), body) == _described(
        _kserve_v2_request, body
    )


def test_direct_v2_parser_reads_a_plain_request_without_pydantic():
    """The benchmark's and tritonclient's JSON shape takes the orjson path (the property test
    above would pass with the pydantic path alone)."""
    row = instance(GOOD)
    body = json.dumps({"id": "r-1", "inputs": tensors([row, {**row, "transaction_id": "t-2"}])})
    request = _plain_request(json.loads(body), "fraud-detector")
    assert request is not None
    assert request.id == "r-1" and request.parameters is None and not request.request_outputs
    assert [i.name for i in request.inputs] == [t["name"] for t in tensors([row])]
    assert request.inputs[0].data == ["t-1", "t-2"] and request.inputs[0].parameters == {}
    for unusual in ('"parameters": {"priority": 1}', '"outputs": [{"name": "score"}]'):
        assert _plain_request(json.loads(body[:-1] + ", " + unusual + "}"), "m") is None
