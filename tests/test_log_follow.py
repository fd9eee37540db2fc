"""The online state follows the other versions' traffic through the inference log.

Real parts: a local store, batches written by ``write_batch`` and by real ``FraudDetector``
log writers. The one fake is a store that is down for its first listings (a failure mode).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import instance, later_transactions, on_loop, predict, shared_model

from components.bundle import Bundle, fetch_bundle, register_bundle
from components.features import compute_features
from components.inference_log import make_record, write_batch
from components.label_files import label_file_key
from components.store import LocalStore, StorePermissionError, StoreUnavailableError
from monitoring.labels import ingest_labels
from serving.log_follow import FollowLoop, LogFollower, check_follow_interval
from serving.metrics import ServingMetrics
from serving.model import FraudDetector, ServingConfig
from serving.source import parse_model_uri
from serving.transactions import TransactionSchema, from_instances

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    trained = shared_model(tmp_path_factory)
    return fetch_bundle(
        LocalStore(trained.store), trained.name, "champion", tmp_path_factory.mktemp("b")
    )


SNAPSHOT_END = pd.Timestamp("2026-05-15T00:00:00Z")


def _batch(store, version: str, ids: list[str], when: datetime, stamp: str | None = None) -> str:
    records = [
        make_record(
            model="fraud",
            version=version,
            transaction={
                "transaction_id": tx,
                "timestamp": stamp or (when - timedelta(minutes=i)).isoformat(),
                "customer_id": f"c-{tx}",
                "terminal_id": "t-1",
                "amount": 10.0 + i,
            },
            score=0.1,
            decision="pass",
            time=when,
        )
        for i, tx in enumerate(ids)
    ]
    (key,) = write_batch(store, records)
    return key


def test_a_poll_reads_each_batch_of_the_other_versions_once(tmp_path):
    store = LocalStore(tmp_path)
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    _batch(store, "v1", ["own-1"], NOW)  # its own traffic: already in its state
    _batch(store, "v2", ["a", "b"], NOW)
    _batch(store, "v3", ["c"], NOW - timedelta(days=1))  # yesterday's partition
    _batch(store, "v2", ["old"], NOW - timedelta(days=2))  # only a replay reads that far
    _batch(store, "v2", ["snap"], NOW, stamp="2026-05-14T23:00:00Z")  # in the snapshot
    first = follower.poll(NOW)
    assert sorted(first.rows["transaction_id"]) == ["a", "b", "c"]
    assert (first.batches, first.records, first.unreadable) == (3, 4, 0)
    assert first.rows["timestamp"].is_monotonic_increasing
    assert str(first.rows["timestamp"].dt.tz) == "UTC"
    assert follower.poll(NOW).batches == 0  # nothing new, nothing read again
    # one transaction logged twice in a batch counts once (same id, customer and time)
    _batch(store, "v2", ["d", "d"], NOW, stamp="2026-06-01T11:00:00Z")
    _batch(store, "v2", ["e"], NOW, stamp="not a time")
    second = follower.poll(NOW)
    assert list(second.rows["transaction_id"]) == ["d"]
    assert (second.batches, second.records, second.unreadable) == (2, 3, 1)
    # a day later yesterday's keys are forgotten (never listed again), today's are still known
    assert follower.poll(NOW + timedelta(days=1)).batches == 0
    assert all("date=2026-05-31" not in k for k in follower.seen)
    replayed = LogFollower(store, "fraud", "v1", SNAPSHOT_END).replay(NOW - timedelta(days=3))
    assert sorted(replayed.rows["transaction_id"]) == ["a", "b", "c", "d", "old", "own-1"]


class _CountingLister(LocalStore):
    """A local store that remembers how many keys each listing of a partition returned."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.returned: list[int] = []

    def list(self, prefix: str = "", recursive: bool = True, start_after=None) -> list[str]:
        keys = super().list(prefix, recursive, start_after)
        if "date=" in prefix:
            self.returned.append(len(keys))
        return keys


def test_a_poll_lists_a_partition_from_an_hour_before_the_newest_batch_read(tmp_path):
    """On S3 a partition holds up to 17,280 batches a day: a poll lists only the recent ones.
    A batch named (by its first record) up to an hour before the newest one read is found;
    one held back longer is not, a documented limit."""
    store = _CountingLister(tmp_path)
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    day = NOW.replace(hour=0)
    for hour in (9, 10, 12):
        _batch(store, "v2", [f"h{hour}"], day.replace(hour=hour))
    assert sorted(follower.poll(NOW).rows["transaction_id"]) == ["h10", "h12", "h9"]
    _batch(store, "v2", ["late"], day.replace(hour=11, minute=30))  # within the hour
    _batch(store, "v2", ["too-late"], day.replace(hour=10, minute=59))  # before it
    store.returned.clear()
    assert follower.poll(NOW).rows["transaction_id"].tolist() == ["late"]
    assert max(store.returned) == 2  # "late" and the 12:00 batch, not all five
    assert follower.poll(NOW).batches == 0  # nothing read twice


def test_a_batch_still_to_be_tried_again_holds_its_partitions_cursor(tmp_path):
    store = _Refusing(tmp_path, {})
    day = NOW.replace(hour=0)
    refused = _batch(store, "v2", ["early"], day.replace(hour=9))
    _batch(store, "v2", ["late"], day.replace(hour=12))
    store.refusals[refused] = 2
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    assert follower.poll(NOW).rows["transaction_id"].tolist() == ["late"]
    assert follower.poll(NOW).batches == 0  # refused again
    assert follower.poll(NOW).rows["transaction_id"].tolist() == ["early"]


def test_one_transaction_logged_twice_is_read_once_and_a_reused_id_is_not_one(tmp_path):
    store = LocalStore(tmp_path)
    at = "2026-06-01T10:00:00Z"
    records = [
        make_record(
            model="fraud",
            version="v2",
            transaction={"transaction_id": "tx-1", "timestamp": stamp, "customer_id": customer,
                         "terminal_id": "t-1", "amount": 5.0},
            score=0.1,
            decision="pass",
            time=NOW,
        )
        for stamp, customer in ((at, "A"), (at, "A"), ("2026-06-01T10:05:00Z", "A"), (at, "B"))
    ]  # fmt: skip
    write_batch(store, records)
    for logged in (
        LogFollower(store, "fraud", "v1", SNAPSHOT_END).poll(NOW),
        LogFollower(store, "fraud", "v1", SNAPSHOT_END).replay(NOW - timedelta(days=1)),
    ):
        assert len(logged.rows) == 3


def test_a_batch_that_cannot_be_read_is_left_out_once_and_the_others_are_read(tmp_path):
    store = LocalStore(tmp_path)
    follower = LogFollower(store, "fraud", "v1", None)
    _batch(store, "v2", ["a"], NOW)
    broken = "inference-log/fraud/v2/date=2026-06-01/120000000000-broken.parquet"
    store.put_bytes(broken, b"not parquet")
    tampered = _batch(store, "v2", ["t"], NOW)
    (store.root / tampered).write_bytes((store.root / tampered).read_bytes() + b"x")  # sha256
    no_amount = "inference-log/fraud/v2/date=2026-06-01/120000000001-other.parquet"
    frame = pd.DataFrame({"time": [NOW], "tx.transaction_id": ["z"], "tx.timestamp": ["x"]})
    store.put_bytes(no_amount, frame.to_parquet())
    _batch(store, "v2", ["b"], NOW)
    logged = follower.poll(NOW)
    assert sorted(logged.rows["transaction_id"]) == ["a", "b"]
    assert sorted(logged.skipped) == sorted([broken, tampered, no_amount])
    assert follower.poll(NOW).batches == 0  # not tried again on every poll
    _batch(store, "v2", ["c"], NOW)
    assert list(follower.poll(NOW).rows["transaction_id"]) == ["c"]
    replayed = LogFollower(store, "fraud", "v1", None).replay(NOW - timedelta(days=1))
    assert sorted(replayed.rows["transaction_id"]) == ["a", "b", "c"]  # a restart keeps them


def test_batches_typed_differently_are_read_alike(tmp_path):
    """Another writer's batch (integer amounts and ids, a missing id) next to the server's."""
    store = LocalStore(tmp_path)
    _batch(store, "v2", ["a"], NOW)
    odd = pd.DataFrame(
        {
            "time": [NOW, NOW, NOW],
            "tx.transaction_id": [7, 8, 9],
            "tx.timestamp": [NOW.isoformat()] * 3,
            "tx.customer_id": [101, None, 103],
            "tx.terminal_id": [5, 5, 5],
            "tx.amount": [12, 13, 14],
        }
    )
    store.put_bytes("inference-log/fraud/v2/date=2026-06-01/1-odd.parquet", odd.to_parquet())
    logged = LogFollower(store, "fraud", "v1", None).poll(NOW)
    assert (logged.batches, logged.records, logged.unreadable, logged.skipped) == (2, 4, 1, [])
    rows = logged.rows.set_index("transaction_id")
    assert rows.loc["9", ["customer_id", "terminal_id", "amount"]].tolist() == ["103", "5", 14.0]
    assert rows["amount"].dtype == np.float64


def test_a_server_that_does_not_replay_does_not_read_old_batches_either(tmp_path):
    store = LocalStore(tmp_path)
    _batch(store, "v2", ["before"], NOW)
    follower = LogFollower(store, "fraud", "v1", None)
    follower.skip_existing(NOW)
    _batch(store, "v2", ["after"], NOW)
    assert list(follower.poll(NOW).rows["transaction_id"]) == ["after"]


class _DownAtFirst(LocalStore):
    """A local store whose first ``failures`` listings fail as an unreachable MinIO would."""

    def __init__(self, root, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def list(self, prefix: str = "", recursive: bool = True, start_after=None) -> list[str]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("s3://fraudops: connection refused")
        return super().list(prefix, recursive, start_after)


class _Refusing(LocalStore):
    """A local store that refuses to give some objects, as S3 does on a permission error."""

    def __init__(self, root, refusals: dict[str, int]) -> None:
        super().__init__(root)
        self.refusals = refusals  # key -> times left (a large number: always)

    def get_bytes(self, key: str) -> bytes:
        if self.refusals.get(key, 0) > 0:
            self.refusals[key] -= 1
            raise StorePermissionError(f"s3://fraudops/{key}: AccessDenied")
        return super().get_bytes(key)


def test_a_batch_the_store_refuses_is_tried_again_then_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.log_follow.MAX_ATTEMPTS", 3)
    store = _Refusing(tmp_path, {})
    follower = LogFollower(store, "fraud", "v1", None)
    _batch(store, "v2", ["a"], NOW)
    twice = _batch(store, "v2", ["b"], NOW)
    always = _batch(store, "v2", ["c"], NOW)
    store.refusals.update({twice: 2, always: 10**6})
    polls = [follower.poll(NOW) for _ in range(4)]
    assert [sorted(p.rows["transaction_id"]) for p in polls] == [["a"], [], ["b"], []]
    assert [p.skipped for p in polls] == [[], [], [always], []]
    assert follower.attempts == {}  # nothing left to try


def test_a_request_catches_up_one_chunk_when_the_event_loop_adds_the_rest(bundle, tmp_path):
    store = _two_versions(bundle, tmp_path)
    detector, _ = _server(store, "v2", 0)
    try:
        scorer = detector.scorer
        for i in range(3):
            scorer.add_scored_elsewhere(["c-x"], ["t-x"], np.array([i]), np.array([1.0]))
        batch = from_instances(
            {"instances": [instance(later_transactions(1).iloc[0])]}, detector.schema
        )
        on_loop(scorer.score_async(batch, catch_up=1))
        assert len(scorer.scored_elsewhere) == 2
        on_loop(scorer.score_async(batch))
        assert len(scorer.scored_elsewhere) == 0
    finally:
        detector.close()


def test_the_loop_counts_failed_polls_and_loses_nothing_once_the_store_is_back(tmp_path):
    store = _DownAtFirst(tmp_path, failures=2)
    _batch(store, "v2", ["a", "b"], datetime.now(UTC))
    added, polls = [], []
    loop = FollowLoop(
        LogFollower(store, "fraud", "v1", None),
        added.append,
        0.1,
        lambda logged, error: polls.append(error),
    ).start()
    deadline = time.monotonic() + 10
    while not added and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.stop()
    assert [type(e) for e in polls[:2]] == [StoreUnavailableError] * 2
    assert polls[2] is None
    assert sorted(added[0].rows["transaction_id"]) == ["a", "b"]
    assert len(added) == 1  # read once, however many polls followed


@pytest.mark.parametrize(
    ("seconds", "ok"),
    [
        *[(0, True), (0.1, True), (5, True), (3600, True)],
        *[(0.05, False), (3601, False), (-1, False), (float("nan"), False), (float("inf"), False)],
    ],
)
def test_the_follow_interval_is_zero_or_a_sane_number_of_seconds(seconds, ok):
    assert (check_follow_interval(seconds) is None) is ok
    if not ok:
        assert "--follow_log_seconds must be 0" in check_follow_interval(seconds)


def _followed(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("fraudops_online_state_followed_total", {"model": "fraud"})


def _two_versions(bundle, tmp_path) -> LocalStore:
    """A store with the bundle registered twice, as v1 and v2."""
    store = LocalStore(tmp_path / "store")
    folder = tmp_path / "bundle"
    folder.mkdir()
    for path in bundle.folder.rglob("*"):
        if path.is_file() and path.name != "MANIFEST.json":
            target = folder / path.relative_to(bundle.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    for _ in range(2):
        register_bundle(store, "fraud", folder, {})
    return store


def _server(
    store, version: str, follow: float, redis_url: str | None = None, name: str = "fraud"
) -> tuple[FraudDetector, CollectorRegistry]:
    registry = CollectorRegistry()
    detector = FraudDetector(
        name,
        parse_model_uri(f"{store.root}#fraud:{version}"),
        ServingConfig(
            log_process=False,
            log_flush_interval=0.1,
            follow_log_seconds=follow,
            state_redis_url=redis_url,
        ),
        metrics=ServingMetrics(registry),
        log_store=store,
    )
    detector.load()
    return detector, registry


def _traffic(bundle, n: int, seed: int, history: int) -> tuple[list[dict], np.ndarray]:
    """``n`` new transactions as V1 instances, and the batch scores of those after the first
    ``history`` (batch scoring over the snapshot and all of them)."""
    spec, model = bundle.spec(), bundle.model()
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    new = later_transactions(n, seed=seed)
    expected = model.predict(compute_features(new, spec, history=snapshot))[history:]
    return [instance(r) for r in new.to_dict("records")], expected


def test_a_canary_counts_the_stables_traffic_in_its_windows(bundle, tmp_path):
    """Stable v1 and canary v2 split the traffic; the canary then scores as batch scoring over
    all of it does, and a canary that does not follow the log does not. The canary loads its
    bundle again halfway: it goes on following."""
    store = _two_versions(bundle, tmp_path)
    rows, expected = _traffic(bundle, 240, seed=11, history=150)

    (stable, _), (canary, followed), (alone, _) = (
        _server(store, "v1", 0.1),
        _server(store, "v2", 0.1),
        _server(store, "v2", 0),
    )
    assert _followed(followed) == 0  # exported from the start
    try:
        for i, row in enumerate(rows[:150]):  # a 50% canary, one transaction a request
            for detector in (stable,) if i % 2 == 0 else (canary, alone):
                predict(detector, {"instances": [row]}, {})
            if i == 75:
                canary.load_bundle()
        deadline = time.monotonic() + 20
        while (_followed(followed) or 0) < 75 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _followed(followed) == 75  # the stable's share, each transaction once
        scores = {
            name: [
                predict(d, {"instances": [r]}, {})["predictions"][0]["score"] for r in rows[150:]
            ]
            for name, d in (("canary", canary), ("alone", alone))
        }
    finally:
        for detector in (stable, canary, alone):
            detector.close()
    np.testing.assert_allclose(scores["canary"], expected, rtol=1e-6)
    assert not np.allclose(scores["alone"], expected, rtol=1e-6)


def test_a_state_in_redis_that_no_replica_kept_current_takes_in_the_log_when_one_is_back(
    bundle, tmp_path, redis_url
):
    """The canary's state in Redis outlives its replicas (the stable's traffic of that time
    reaches no one). A replica that finds it seeded, but marked served by none, replays the
    log into it (each transaction once): it then scores as batch scoring over all traffic."""
    import redis

    from serving.redis_state import drop_version

    store = _two_versions(bundle, tmp_path)
    rows, expected = _traffic(bundle, 200, seed=15, history=150)
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    canary, _ = _server(store, "v2", 0.1, redis_url, name)
    canary.close()  # seeded and left; its mark lapses (deleted here, not 10 minutes later)
    client = redis.Redis.from_url(redis_url)
    client.delete(canary.state.prefix + "served")
    stable, _ = _server(store, "v1", 0.1, name=name)
    for row in rows[:150]:
        predict(stable, {"instances": [row]}, {})
    stable.close()  # its log is written
    again, _ = _server(store, "v2", 0.1, redis_url, name)
    try:
        scores = [
            predict(again, {"instances": [r]}, {})["predictions"][0]["score"] for r in rows[150:]
        ]
    finally:
        again.close()
        drop_version(client, name, "v2")
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_a_state_in_redis_takes_the_followed_traffic_and_labels_on_the_follow_thread(
    bundle, tmp_path, redis_url
):
    """A canary whose state is in Redis adds the stable's transactions and the late labels
    from its follow thread: its event loop (running, as in the server) never waits for Redis
    on their behalf, and they go in without a request of its own."""
    import redis

    from serving.redis_state import drop_version

    store = _two_versions(bundle, tmp_path)
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    rows = [instance(r) for r in later_transactions(60, seed=16).to_dict("records")]
    (stable, _), (canary, registry) = (
        _server(store, "v1", 0, name=name),
        _server(store, "v2", 0.1, redis_url, name),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="event-loop", daemon=True)
    thread.start()
    canary.event_loop = loop
    state, threads = canary.state, []

    def recorded(call):
        def called(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return call(*args, **kwargs)

        return called

    for method in ("append", "set_labels"):
        setattr(state, method, recorded(getattr(state, method)))

    def total(metric: str, **labels: str) -> float:
        return registry.get_sample_value(metric, {"model": name, **labels}) or 0

    def wait_for(done) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    try:
        before = state.stats()["customer_rows"]
        predict(stable, {"instances": rows}, {})
        stable.close()  # its log is written
        wait_for(lambda: state.stats()["customer_rows"] == before + 60)
        fraud = pd.DataFrame(
            {
                "transaction_id": [r["transaction_id"] for r in rows[:5]],
                "terminal_id": [r["terminal_id"] for r in rows[:5]],
                "timestamp": [r["timestamp"] for r in rows[:5]],
                "is_fraud": 1,
            }
        )
        ingest_labels(store, name, fraud)
        wait_for(lambda: total("fraudops_online_state_labels_total", outcome="changed") == 5)
        assert total("fraudops_online_state_followed_total") == 60
        assert not canary.scorer.scored_elsewhere
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        canary.close()
        drop_version(redis.Redis.from_url(redis_url), name, "v2")
    assert threads and set(threads) == {"fraudops-follow"}, threads


def test_followed_traffic_redis_refused_across_a_reload_goes_in_once_redis_takes_it(
    bundle, tmp_path, redis_url
):
    """The follow thread keeps what a Redis state refused queued and tries again; a load
    meanwhile (a new scorer over the same state) does not strand it."""
    import redis

    from serving.redis_state import drop_version
    from serving.state import StateUnavailable

    store = _two_versions(bundle, tmp_path)
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    rows = [instance(r) for r in later_transactions(30, seed=17).to_dict("records")]
    stable, _ = _server(store, "v1", 0, name=name)
    canary, registry = _server(store, "v2", 0.1, redis_url, name)
    state, refusing = canary.state, threading.Event()
    refusing.set()
    append = state.append

    def append_unless_refusing(*args, **kwargs):
        if refusing.is_set():
            raise StateUnavailable("the online state in Redis cannot be reached (a test)")
        return append(*args, **kwargs)

    state.append = append_unless_refusing
    followed = {"model": name}
    try:
        before = state.stats()["customer_rows"]
        predict(stable, {"instances": rows}, {})
        stable.close()
        deadline = time.monotonic() + 20
        while not canary.scorer.scored_elsewhere:  # read, queued, refused: tried again
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        canary.load_bundle()
        assert canary.state is state and canary.scorer.scored_elsewhere
        failures = registry.get_sample_value(
            "fraudops_online_state_follow_failures_total", followed
        )
        assert failures >= 1  # each attempt counted
        refusing.clear()
        deadline = time.monotonic() + 10
        while state.stats()["customer_rows"] < before + 30:
            assert time.monotonic() < deadline, "the queue was stranded by the load"
            time.sleep(0.05)
        assert not canary.scorer.scored_elsewhere
        time.sleep(0.3)  # polls again: counted once applied
        assert registry.get_sample_value("fraudops_online_state_followed_total", followed) == 30
    finally:
        canary.close()
        drop_version(redis.Redis.from_url(redis_url), name, "v2")
    assert state.stats()["customer_rows"] == before + 30


def test_a_transaction_both_versions_scored_counts_once_in_each_state(bundle, tmp_path):
    """A gateway retries on the stable a request the canary scored (its answer was lost): each
    state then holds it from its own request and from the other's log, and counts it once.
    The same request again on one server gets the same score and changes nothing."""
    store = _two_versions(bundle, tmp_path)
    rows, expected = _traffic(bundle, 200, seed=14, history=120)
    (stable, on_stable), (canary, on_canary) = _server(store, "v1", 0.1), _server(store, "v2", 0.1)
    repeated = {"model": "fraud"}
    try:
        for row in rows[:120]:
            first = predict(canary, {"instances": [row]}, {})["predictions"][0]
            predict(stable, {"instances": [row]}, {})
            again = predict(canary, {"instances": [row]}, {})["predictions"][0]
            assert again == first
        deadline = time.monotonic() + 20
        while min(_followed(on_stable) or 0, _followed(on_canary) or 0) < 120:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # what the followers queued goes into the states (a request would do it first), and
        # is counted before the next requests: the canary may follow the stable's records of
        # those before it scores them itself, and would count its own request as a repeat
        for detector in (stable, canary):
            detector.scorer.apply_scored_elsewhere()
        on_canary_repeated, on_stable_repeated = (
            r.get_sample_value("fraudops_online_state_repeated_total", repeated)
            for r in (on_canary, on_stable)
        )
        scores = {
            name: [
                predict(d, {"instances": [r]}, {})["predictions"][0]["score"] for r in rows[120:]
            ]
            for name, d in (("stable", stable), ("canary", canary))
        }
    finally:
        stable.close()
        canary.close()
    for name in ("stable", "canary"):
        np.testing.assert_allclose(scores[name], expected, rtol=1e-6, err_msg=name)
    # the canary: its 120 retries, and the stable's 120 from its log. The stable: the canary's
    # 240 records of those 120, less the copies that came in one poll (dropped there)
    assert on_canary_repeated == 240
    assert 120 <= on_stable_repeated <= 240


def test_the_event_loop_adds_the_followed_transactions_between_requests(
    bundle, tmp_path, monkeypatch
):
    """An idle canary's state takes in the stable's traffic on its event loop, in chunks,
    without waiting for a request of its own."""
    monkeypatch.setattr("serving.model.FOLLOW_CHUNK", 7)
    store = _two_versions(bundle, tmp_path)
    rows = [instance(r) for r in later_transactions(100, seed=12).to_dict("records")]
    (stable, _), (canary, followed) = _server(store, "v1", 0.1), _server(store, "v2", 0.1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    canary.event_loop = loop

    def on_loop(call):  # the state is only touched on the loop's thread, as in the server
        async def run():
            return call()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    try:
        before = on_loop(canary.state.stats)["customer_rows"]
        predict(stable, {"instances": rows}, {})
        deadline = time.monotonic() + 20
        # the poll is counted once its rows are queued, and may be after the loop adds them
        while on_loop(canary.state.stats)["customer_rows"] < before + 100 or not _followed(
            followed
        ):
            assert time.monotonic() < deadline, (_followed(followed), before)
            time.sleep(0.05)
        assert on_loop(lambda: len(canary.scorer.scored_elsewhere)) == 0
        assert _followed(followed) == 100
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        stable.close()
        canary.close()


def _label_file(store, rows: list[dict], when: datetime) -> str:
    key = label_file_key("fraud", when)
    store.put_bytes(key, pd.DataFrame(rows).to_parquet(index=False))
    return key


def test_a_poll_reads_each_new_label_file_once_and_counts_labels_it_cannot_place(tmp_path):
    store = LocalStore(tmp_path)
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    stamp = pd.Timestamp("2026-05-10T08:00:00Z")
    _label_file(store, [{"transaction_id": "old", "is_fraud": 1}], NOW - timedelta(days=3))
    first = _label_file(
        store,
        [{"transaction_id": "a", "is_fraud": 1, "terminal_id": "t-1", "timestamp": stamp}],
        NOW,
    )
    _label_file(  # a file from before labels carried terminal and time: counted, left out
        store, [{"transaction_id": "b", "is_fraud": 1}], NOW - timedelta(days=1)
    )
    polled = follower.poll(NOW)
    assert (polled.label_files, polled.unplaced, polled.batches) == (2, 1, 0)
    assert polled.labels.to_dict("records") == [
        {"transaction_id": "a", "terminal_id": "t-1", "timestamp": stamp, "is_fraud": 1}
    ]
    assert follower.poll(NOW).label_files == 0  # each file once
    # a later file overturns an earlier label: both arrive, in the order they were ingested
    _label_file(
        store,
        [{"transaction_id": "a", "is_fraud": 0, "terminal_id": "t-1", "timestamp": stamp}],
        NOW + timedelta(seconds=1),
    )
    assert follower.poll(NOW).labels["is_fraud"].tolist() == [0]
    replayed = LogFollower(store, "fraud", "v1", SNAPSHOT_END).replay(NOW - timedelta(days=2))
    assert replayed.label_files == 3 and replayed.labels["is_fraud"].tolist() == [1, 0]
    assert first < sorted(store.list("labels/fraud/"))[-1]


class _DownForLabels(LocalStore):
    """A local store that goes down once, as the first label file is read."""

    down = True

    def get_bytes(self, key: str) -> bytes:
        if key.startswith("labels/") and self.down:
            self.down = False
            raise StoreUnavailableError("s3://fraudops: connection refused")
        return super().get_bytes(key)


def test_a_store_down_in_the_middle_of_a_poll_loses_neither_batches_nor_labels(tmp_path):
    store = _DownForLabels(tmp_path)
    _batch(store, "v2", ["a"], NOW)
    row = {"transaction_id": "a", "is_fraud": 1, "terminal_id": "t-1", "timestamp": NOW}
    _label_file(store, [row], NOW)
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    with pytest.raises(StoreUnavailableError):
        follower.poll(NOW)
    polled = follower.poll(NOW)  # the batch read before the store went down is read again
    assert (polled.batches, polled.label_files) == (1, 1)
    assert polled.rows["transaction_id"].tolist() == ["a"] and len(polled.labels) == 1


class _NoLabelsAccess(LocalStore):
    """A store whose credentials may not list labels/ (an S3 policy without that prefix)."""

    allowed = False

    def list(self, prefix: str = "", recursive: bool = True, start_after=None) -> list[str]:
        if prefix.startswith("labels/") and not self.allowed:
            raise StorePermissionError(f"s3://fraudops/{prefix}: AccessDenied")
        return super().list(prefix, recursive, start_after)


def test_label_files_that_cannot_be_listed_do_not_stop_the_transactions(tmp_path, caplog):
    store = _NoLabelsAccess(tmp_path)
    _batch(store, "v2", ["a"], NOW)
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    assert follower.replay(NOW - timedelta(days=3)).rows["transaction_id"].tolist() == ["a"]
    _batch(store, "v2", ["b"], NOW)
    polled = follower.poll(NOW)
    assert polled.rows["transaction_id"].tolist() == ["b"] and polled.label_files == 0
    warned = caplog.text.count("cannot list the label files")
    assert warned >= 1
    follower.poll(NOW)
    assert caplog.text.count("cannot list the label files") == warned  # not at every poll


def test_label_files_read_before_a_failed_listing_are_not_read_again(tmp_path):
    store = _NoLabelsAccess(tmp_path)
    store.allowed = True
    row = {"transaction_id": "a", "is_fraud": 1, "terminal_id": "t-1", "timestamp": NOW}
    _label_file(store, [row], NOW)
    follower = LogFollower(store, "fraud", "v1", SNAPSHOT_END)
    assert follower.poll(NOW).label_files == 1
    store.allowed = False
    assert follower.poll(NOW).label_files == 0
    store.allowed = True
    assert follower.poll(NOW).label_files == 0


def _labels_total(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value(
        "fraudops_online_state_labels_total", {"model": "fraud", "outcome": outcome}
    )


def test_a_server_puts_late_labels_on_its_state_while_it_serves_and_after_a_restart(
    tmp_path_factory, bundle, tmp_path
):
    """Frauds of the snapshot's days reported after it reach the terminal fraud rates: the
    server then computes the features batch scoring computes over the true labels, both when
    the label file arrives while it serves and when it starts after it."""
    store = _two_versions(bundle, tmp_path)
    spec, model = bundle.spec(), bundle.model()
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    data = shared_model(tmp_path_factory).data
    end = data["timestamp"].max()
    late = data[
        (data["label_known_at"] > end)
        & (data["is_fraud"] == 1)
        & data["transaction_id"].isin(snapshot["transaction_id"])
    ]
    assert (
        len(late) >= 5
        and (
            snapshot.set_index("transaction_id").loc[late["transaction_id"], "is_fraud"] == 0
        ).all()
    )
    truth = snapshot.assign(
        is_fraud=snapshot["is_fraud"].where(
            ~snapshot["transaction_id"].isin(late["transaction_id"]), 1
        )
    )
    new = later_transactions(300, seed=13, start=f"{end + pd.Timedelta(days=3):%Y-%m-%d}")
    expected = compute_features(new, spec, history=truth)[model.feature_names].to_numpy()
    stale = compute_features(new, spec, history=snapshot)[model.feature_names].to_numpy()
    assert not np.allclose(expected, stale), "the labels would change no feature: no test"
    batch = from_instances(
        {"instances": [instance(r) for r in new.to_dict("records")]}, TransactionSchema()
    )

    def features(detector: FraudDetector) -> np.ndarray:
        detector.scorer.apply_scored_elsewhere()
        return detector.scorer.features.compute(batch, detector.scorer.state)

    serving, registry = _server(store, "v1", 0.1)
    try:
        np.testing.assert_allclose(features(serving), stale, rtol=1e-5, atol=1e-6)
        ingest_labels(
            store, "fraud", late[["transaction_id", "terminal_id", "timestamp", "is_fraud"]]
        )
        deadline = time.monotonic() + 20
        while not _labels_total(registry, "changed") and time.monotonic() < deadline:
            serving.scorer.apply_scored_elsewhere()
            time.sleep(0.05)
        assert _labels_total(registry, "changed") == len(late)
        np.testing.assert_allclose(features(serving), expected, rtol=1e-5, atol=1e-6)
    finally:
        serving.close()
    restarted, registry = _server(store, "v1", 0)
    try:
        assert _labels_total(registry, "changed") == len(late)
        np.testing.assert_allclose(features(restarted), expected, rtol=1e-5, atol=1e-6)
    finally:
        restarted.close()
