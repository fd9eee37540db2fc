"""The online state in Redis (a real ``redis-server`` on loopback): the same rows as the
in-memory state for any sequence of operations, shared safely by several replicas, and clear
errors when Redis is gone. The feature-level tests run on both states in
``test_serving_units.py`` (``make_state``)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable

import numpy as np
import pandas as pd
import pytest
import redis
import redis.asyncio as aredis
from conftest import start_redis_server
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from serving_helpers import on_loop, timed_step

from serving.redis_state import (
    BREAK_SECONDS,
    CHUNK,
    READ_IN_SCRIPT,
    ROW,
    SERVED_SECONDS,
    RedisOnlineState,
    StateUnavailable,
    drop_version,
    stored_versions,
)
from serving.state import History, InMemoryOnlineState

DAY = 86_400_000


def _redis_state(url: str, version: str | None = None, **kw) -> RedisOnlineState:
    return RedisOnlineState(url, "tests", version or uuid.uuid4().hex, kw.pop("days", 2), **kw)


@pytest.fixture
def fresh(redis_url):
    """``fresh(**kw)``: a seeded, empty Redis state of a new version; removed afterwards."""
    made = []

    def make(**kw) -> RedisOnlineState:
        state = _redis_state(redis_url, **kw)
        state.seed(pd.DataFrame())
        made.append(state)
        return state

    yield make
    for state in made:
        state._clear()
        state.close()


appends = st.tuples(
    st.just("append"),
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", "c3"]),  # customer
            st.sampled_from(["t1", "t2"]),  # terminal
            st.integers(0, 4 * DAY).map(lambda t: t - t % (DAY // 4)),  # few distinct times
            st.sampled_from([None, "a", "b", "c", "d"]),  # transaction id (None: unknown)
        ),
        min_size=1,
        max_size=6,
    ),
)
labels = st.tuples(
    st.just("label"),
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t9"]),
            st.integers(0, 16).map(lambda k: k * (DAY // 4)),
            st.sampled_from([0.0, 1.0]),
            st.sampled_from([None, "a", "b", "z"]),
        ),
        min_size=1,
        max_size=4,
    ),
)


# a request's step (score_and_add): transactions as for an append, whether it is refused, and
# its way: the append script reads the history itself, an MGET beside it in a MULTI, or (a
# large request) the history read first and the transactions added 1 at a time
requests = st.tuples(
    st.just("request"),
    st.tuples(
        appends.map(lambda a: a[1]), st.booleans(), st.sampled_from(["script", "multi", "chunks"])
    ),
)


class Refused(Exception):
    """What a request's scoring raised (e.g. a feature overflowing float32)."""


def _ticker() -> tuple[asyncio.Task, list[int]]:
    """A task counting the event loop's 10 ms ticks, and the count (none while a call holds
    the loop)."""
    ticks = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks[0] += 1

    return asyncio.create_task(tick()), ticks


def _assert_same_recent_rows(a: History, b: History, floor: int) -> None:
    for x, y in ((a.customers, b.customers), (a.terminals, b.terminals)):
        recent_x, recent_y = x.time_ms >= floor, y.time_ms >= floor
        np.testing.assert_array_equal(x.group[recent_x], y.group[recent_y])
        np.testing.assert_array_equal(x.time_ms[recent_x], y.time_ms[recent_y])
        np.testing.assert_array_equal(x.value[recent_x], y.value[recent_y])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(st.one_of(appends, labels, requests), min_size=1, max_size=12))
@example(  # a refused late arrival was its entity's oldest row: the sweep's index goes back
    operations=[
        ("request", ([("c1", "t1", DAY // 4, "a")], False, "script")),
        ("request", ([("c1", "t1", 0, "b")], True, "multi")),
    ]
)
def test_redis_keeps_the_rows_the_in_memory_state_keeps(fresh, operations):
    """Retries (same id, customer and time), late arrivals, labels by id or by time, rows
    falling out of the retention, requests (history read, then the transactions added) and
    refused requests (nothing added): both states answer alike and hold the same recent rows
    in the same order (the order sets the float sums of the windows).

    Rows older than the retention (before the floor) leave each state at its own pace (the
    in-memory sweep visits entities round robin, Redis's the longest idle first; a refused
    request moves Redis's watermark, not memory's): a retry or a label of such a row may find
    it in one and not in the other, so answers are compared for operations within the
    retention only, the kept rows always."""
    memory, shared = InMemoryOnlineState(2, sweep_per_append=1), fresh(sweep_per_append=1)
    newest = 0
    for kind, rows in operations:
        refuse = False
        if kind == "request":
            rows, refuse, way = rows
            shared.read_in_script = READ_IN_SCRIPT if way == "script" else 0
            shared.chunk = 1 if way == "chunks" else CHUNK
        if kind in ("append", "request"):
            customers, terminals, times, ids = (list(c) for c in zip(*rows, strict=True))
            amounts = np.arange(len(rows), dtype=float) + 0.5
            known = None if any(i is None for i in ids) else ids
            args = (customers, terminals, np.array(times), amounts, None, known)
            newest = max(newest, *times)
        else:
            terminals, times, values, ids = (list(c) for c in zip(*rows, strict=True))
            known = None if any(i is None for i in ids) else ids
            args = (terminals, np.array(times), np.array(values), known)
        if kind == "request":
            answers = [_request(state, args, refuse) for state in (memory, shared)]
            if min(times) >= newest - 2 * DAY and not refuse:
                _assert_same_recent_rows(answers[0][0], answers[1][0], newest - 2 * DAY)
                assert answers[0][1] == answers[1][1]
            continue
        change = memory.append if kind == "append" else memory.set_labels
        answers = change(*args), getattr(shared, change.__name__)(*args)
        if min(times) >= newest - 2 * DAY:
            assert answers[0] == answers[1]
    floor = newest - 2 * DAY
    for entities in (["c1", "c2", "c3"], ["t1", "t2"]):
        got = [state.history_for(entities, entities) for state in (memory, shared)]
        _assert_same_recent_rows(got[0], got[1], floor)
    for kind, entities in (("c", ["c1", "c2", "c3"]), ("t", ["t1", "t2", "t9"])):
        for entity in entities:  # the sweep's index: each entity's oldest row time
            rows = shared.redis.get(f"{shared.prefix}{kind}:{entity}")
            oldest = shared.redis.zscore(f"{shared.prefix}idx:{kind}", entity)
            assert oldest == (None if rows is None else np.frombuffer(rows, ROW)["time"][0])
    stats = shared.stats()
    everything = shared.history_for(["c1", "c2", "c3"], ["t1", "t2", "t9"])
    assert (stats["customer_rows"], stats["terminal_rows"]) == (
        len(everything.customers),
        len(everything.terminals),
    )


def _request(state, args: tuple, refuse: bool) -> tuple[History, int] | None:
    """A request's step on ``state``: its entities' history (None when refused) and the
    number of its transactions there already."""
    customers, terminals, *_, ids = args

    def score(history: History) -> History:
        if refuse:
            raise Refused
        return history

    try:
        return on_loop(
            state.score_and_add_async(
                sorted(set(customers)), sorted(set(terminals)), *args[:4], ids, score
            )
        )
    except Refused:
        return None


def test_replicas_sharing_a_version_add_each_transaction_once(redis_url, fresh):
    """Two replicas (two clients) follow the same other version's log at once: each
    transaction is one row, and each replica reads what the other wrote."""
    first = fresh()
    second = _redis_state(redis_url, first.version)
    n = 3_000
    customers = [f"c{i % 50}" for i in range(n)]
    terminals = [f"t{i % 70}" for i in range(n)]
    times = np.arange(n, dtype=np.int64) * 1_000 + DAY
    ids = [f"tx{i}" for i in range(n)]
    repeated = {}

    def follow(name: str, state: RedisOnlineState) -> None:
        repeated[name] = sum(
            state.append(
                customers[k : k + 500],
                terminals[k : k + 500],
                times[k : k + 500],
                np.ones(500),
                None,
                ids[k : k + 500],
            )
            for k in range(0, n, 500)
        )

    threads = [threading.Thread(target=follow, args=p) for p in (("1", first), ("2", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert repeated["1"] + repeated["2"] == n  # every transaction was added by exactly one
    assert first.stats()["customer_rows"] == first.stats()["terminal_rows"] == n
    a = first.history_for(["c1"], ["t1"])
    b = second.history_for(["c1"], ["t1"])
    assert a.customers.time_ms.tolist() == b.customers.time_ms.tolist() == times[1::50].tolist()
    second.close()


def test_replicas_scoring_one_customer_at_once_see_each_other_as_one_server_would(redis_url, fresh):
    """Two replicas score the same customer's transactions at once. Each request's history
    holds every transaction added before it (read and added in one step), as on one server:
    the requests saw 0, 1, ..., n-1 earlier transactions, each count once."""
    first = fresh()
    second = _redis_state(redis_url, first.version)
    seen: dict[str, list[int]] = {"1": [], "2": []}

    async def requests(name: str, state: RedisOnlineState) -> None:
        for i in range(200):
            count, repeated = await state.score_and_add_async(
                ["c"],
                ["t"],
                ["c"],
                ["t"],
                np.array([DAY + i]),
                np.ones(1),
                [f"{name}-{i}"],
                lambda history: len(history.customers),
            )
            assert repeated == 0
            seen[name].append(count)

    def score(name: str, state: RedisOnlineState) -> None:  # each replica its own event loop
        asyncio.run(requests(name, state))

    threads = [threading.Thread(target=score, args=p) for p in (("1", first), ("2", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    second.close()
    assert sorted(seen["1"] + seen["2"]) == list(range(400))
    assert first.stats()["customer_rows"] == 400


@pytest.mark.parametrize("in_script", [True, False], ids=["script reads", "MGET in MULTI"])
def test_requests_awaiting_redis_on_one_event_loop_overlap_and_score_as_one_server(
    redis_url, fresh, in_script
):
    """Two replicas, each with 8 requests at once on its event loop (one loop here): a
    request waiting for Redis lets the others go on (they overlap), and each request's
    history still holds every transaction added before it, as on one server."""
    first = fresh()
    second = _redis_state(redis_url, first.version)
    for state in (first, second):
        state.read_in_script = READ_IN_SCRIPT if in_script else 0
    seen: list[int] = []
    waiting, most_waiting = 0, 0

    def count(history: History) -> int:
        nonlocal waiting
        waiting -= 1
        return len(history.customers)

    async def requests(name: str, state: RedisOnlineState) -> None:
        nonlocal waiting, most_waiting
        for i in range(25):
            waiting += 1
            most_waiting = max(most_waiting, waiting)
            got, repeated = await state.score_and_add_async(
                ["c"], ["t"], ["c"], ["t"], np.array([DAY + i]), np.ones(1), [f"{name}-{i}"], count
            )
            assert repeated == 0
            seen.append(got)

    async def main() -> None:
        await asyncio.gather(
            *(
                requests(f"{r}{k}", state)
                for r, state in enumerate((first, second))
                for k in range(8)
            )
        )

    asyncio.run(main())
    second.close()
    assert sorted(seen) == list(range(400))
    assert first.stats()["customer_rows"] == 400
    assert most_waiting >= 8  # a synchronous step never yields: at most 1


@pytest.mark.parametrize("in_script", [True, False], ids=["script reads", "MGET in MULTI"])
def test_a_redis_that_forgot_its_scripts_still_scores(fresh, in_script):
    """After a ``SCRIPT FLUSH`` (or a restart that kept the data) the scripts load again."""
    state = fresh()
    state.read_in_script = READ_IN_SCRIPT if in_script else 0
    step = lambda *request: on_loop(state.score_and_add_async(*request))  # noqa: E731
    args = (np.array([DAY]), np.ones(1), ["a"], lambda history: len(history.customers))
    assert step(["c"], ["t"], ["c"], ["t"], *args) == (0, 0)
    state.redis.script_flush()
    assert step(["c"], ["t"], ["c"], ["t"], *args) == (1, 1)  # the retry
    state.redis.script_flush()  # a refused request: its rows are taken out by another script

    def refuse(history: History) -> None:
        raise Refused

    with pytest.raises(Refused):
        step(["c"], ["t"], ["c"], ["t"], np.array([DAY + 1]), np.ones(1), ["b"], refuse)
    assert step(["c"], ["t"], ["c"], ["t"], np.array([DAY + 2]), *args[1:]) == (1, 0)


def test_one_replica_seeds_a_version_and_the_others_wait_for_it(redis_url, fresh):
    snapshot = pd.DataFrame(
        {
            "transaction_id": [f"s{i}" for i in range(400)],
            "timestamp": pd.date_range("2026-01-01", periods=400, freq="min", tz="UTC"),
            "customer_id": [f"c{i % 7}" for i in range(400)],
            "terminal_id": [f"t{i % 9}" for i in range(400)],
            "amount": np.arange(400, dtype=float),
            "is_fraud": [i % 5 == 0 for i in range(400)],
        }
    )
    version = uuid.uuid4().hex
    replicas = [_redis_state(redis_url, version, days=31) for _ in range(4)]
    # a replica that died while seeding left a row behind (no lock, no mark)
    replicas[0].redis.set(replicas[0].prefix + "c:leftover", b"\0" * 24)
    written: list[int | None] = []
    threads = [
        threading.Thread(target=lambda s=s: written.append(s.seed(snapshot))) for s in replicas
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(written, key=str) == [400, None, None, None]  # None: seeded by another
    memory = InMemoryOnlineState(31)
    memory.load_frame(snapshot)
    customers, terminals = [f"c{i}" for i in range(7)], [f"t{i}" for i in range(9)]
    expected = memory.history_for([*customers, "leftover"], terminals)
    for state in replicas:
        got = state.history_for([*customers, "leftover"], terminals)
        for a, b in ((expected.customers, got.customers), (expected.terminals, got.terminals)):
            np.testing.assert_array_equal(a.group, b.group)
            np.testing.assert_array_equal(a.time_ms, b.time_ms)
            np.testing.assert_array_equal(a.value, b.value)
        assert state.stats() == memory.stats()
    replicas[0]._clear()
    for state in replicas:
        state.close()


def test_a_replica_that_takes_the_lock_after_another_one_seeded_does_not_seed_again(redis_url):
    """The race behind a rare failure of the test above: a replica checks the mark just
    before another one sets it, and takes the lock just after that one let it go. It must
    see the mark then, not clear the state in use and write the snapshot again."""
    version = uuid.uuid4().hex
    first, late = (_redis_state(redis_url, version, days=31) for _ in range(2))
    snapshot = pd.DataFrame(
        {
            "transaction_id": ["s0"],
            "timestamp": [pd.Timestamp("2026-01-01", tz="UTC")],
            "customer_id": ["c"],
            "terminal_id": ["t"],
            "amount": [1.0],
        }
    )
    assert first.seed(snapshot) == 1
    first.append(["c"], ["t"], np.array([DAY * 20_454]), np.ones(1), transaction_ids=["new"])
    exists, checks = late.redis.exists, []

    def seen_before_the_mark(*keys):
        checks.append(keys)
        return 0 if len(checks) == 1 else exists(*keys)

    late.redis.exists = seen_before_the_mark
    try:
        assert late.seed(snapshot) is None
        assert len(first.history_for(["c"], ["t"]).customers) == 2  # the new row is kept
        assert late.redis.get(late.prefix + "seeding") is None  # the lock let go
    finally:
        first._clear()
        first.close()
        late.close()


def test_a_redis_that_is_down_or_lost_its_data_is_a_clear_error():
    process, url = start_redis_server()
    port = url.rsplit(":", 1)[1].split("/")[0]
    state = RedisOnlineState(
        f"redis://default:s3cret@127.0.0.1:{port}/0", "tests", "v1", 31,
        client=redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1),
    )  # fmt: skip
    state.seed(pd.DataFrame())
    state.append(["c1"], ["t1"], np.array([DAY]), np.ones(1), None, ["a"])
    assert state.stats()["customer_rows"] == 1
    state.redis.flushall()  # as a restart without persistence leaves it
    request = (["c1"], ["t1"], ["c1"], ["t1"], np.array([DAY]), np.ones(1), ["b"], len)
    plain = RedisOnlineState(url, "tests", "v1", 31)
    in_multi = RedisOnlineState(url, "tests", "v1", 31)
    in_multi.read_in_script = 0  # a request of many entities: MGET and the script in a MULTI
    for call in (
        lambda: state.history_for(["c1"], ["t1"]),
        lambda: state.append(["c1"], ["t1"], np.array([DAY]), np.ones(1)),
        lambda: state.set_labels(["t1"], np.array([DAY]), np.ones(1)),
        lambda: asyncio.run(plain.score_and_add_async(*request)),
        lambda: asyncio.run(in_multi.score_and_add_async(*request)),
    ):
        with pytest.raises(StateUnavailable, match=r"lost its data .* seed it again") as caught:
            call()
        assert caught.value.lost
    process.terminate()
    process.wait(10)
    with pytest.raises(StateUnavailable, match=f"cannot be reached .*{port}") as caught:
        state.history_for(["c1"], ["t1"])
    assert "s3cret" not in str(caught.value) and "***@127.0.0.1" in str(caught.value)
    with pytest.raises(StateUnavailable, match="cannot be reached"):
        state.append(["c1"], ["t1"], np.array([DAY]), np.ones(1))
    for other in (plain, in_multi):
        with pytest.raises(StateUnavailable, match=f"cannot be reached .*{port}"):
            asyncio.run(other.score_and_add_async(*request))
        other.close()
    assert state.stats()["customer_rows"] == 1  # the last read, not an exception in a scrape


def test_wrong_credentials_and_a_full_redis_say_what_to_fix():
    process, url = start_redis_server()
    try:
        state = RedisOnlineState(url, "tests", "v1", 31)
        state.seed(pd.DataFrame())
        admin = redis.Redis.from_url(url)
        admin.config_set("maxmemory", "1")  # noeviction, Redis's default: writes refused
        with pytest.raises(StateUnavailable, match=r"refused .*Redis is full: give it more"):
            state.append(["c1"], ["t1"], np.array([DAY]), np.ones(1))
        state.read_in_script = 0  # MGET and the script in a MULTI: the same answer
        request = (
            ["cust-42"],
            ["t1"],
            ["cust-42"],
            ["t1"],
            np.array([DAY]),
            np.ones(1),
            ["a"],
            len,
        )
        for state.read_in_script in (READ_IN_SCRIPT, 0):  # the script or a MULTI: the same
            with pytest.raises(StateUnavailable, match=r"refused .*Redis is full") as caught:
                asyncio.run(state.score_and_add_async(*request))
            assert "cust-42" not in str(caught.value)
        assert len(state.history_for(["c1"], ["t1"]).customers) == 0  # reads still work
        admin.config_set("maxmemory", "0")
        admin.config_set("requirepass", "right-one")
        port = url.rsplit(":", 1)[1].split("/")[0]
        wrong = RedisOnlineState(f"redis://:wrong-one@127.0.0.1:{port}/0", "tests", "v1", 31)
        with pytest.raises(StateUnavailable, match="refused the credentials") as caught:
            wrong.history_for(["c1"], ["t1"])
        assert "wrong-one" not in str(caught.value)
        with pytest.raises(StateUnavailable, match="refused the credentials") as caught:
            asyncio.run(wrong.score_and_add_async(*request))
        assert "wrong-one" not in str(caught.value)
        right = RedisOnlineState(f"redis://:right-one@127.0.0.1:{port}/0", "tests", "v1", 31)
        assert right.append(["c1"], ["t1"], np.array([DAY]), np.ones(1)) == 0
    finally:
        process.terminate()
        process.wait(10)


def test_the_seeding_replica_replays_before_any_replica_may_score(redis_url):
    """A replica reading the state while another seeds it gets 'not seeded' (503), never the
    snapshot without the replayed log; the seeding replica's replay is written meanwhile."""
    version = uuid.uuid4().hex
    seeder, other = (_redis_state(redis_url, version, days=31) for _ in range(2))
    seen = {}

    def replay() -> None:
        seeder.append(["c1"], ["t1"], np.array([DAY]), np.ones(1), None, ["logged"])
        with pytest.raises(StateUnavailable) as caught:
            other.history_for(["c1"], ["t1"])
        seen["lost"] = caught.value.lost

    assert seeder.seed(pd.DataFrame(), then=replay) == 0 and seen == {"lost": True}
    assert other.history_for(["c1"], ["t1"]).customers.time_ms.tolist() == [DAY]
    seeder._clear()
    for state in (seeder, other):
        state.close()


def test_a_seeding_replica_that_lost_its_lock_stops_before_marking(redis_url, monkeypatch):
    state = _redis_state(redis_url, days=31)

    def steal() -> None:  # another replica took over after this one's lock expired
        state.redis.set(state.prefix + "seeding", "someone-else")

    with pytest.raises(StateUnavailable, match="lost its lock on seeding"):
        state.seed(pd.DataFrame(), then=steal)
    assert not state.redis.exists(state.prefix + "seeded")
    assert state.redis.get(state.prefix + "seeding") == b"someone-else"  # theirs, kept
    state._clear()
    state.close()


def test_a_redis_that_evicts_any_key_is_refused(redis_url):
    state = _redis_state(redis_url)
    state.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(StateUnavailable, match=r"evicts keys .* noeviction"):
            state.seed(pd.DataFrame())
    finally:
        state.redis.config_set("maxmemory-policy", "noeviction")
    assert state.seed(pd.DataFrame()) == 0 and state.redis.exists(state.prefix + "seeded")
    assert state.seed(pd.DataFrame()) is None  # seeded already: the log is not replayed again
    state._clear()
    state.close()


def test_a_hanging_redis_holds_one_request_then_refuses_at_once_for_a_second(own_redis):
    process, url = own_redis
    state = RedisOnlineState(url, "tests", "v1", 31)
    state.seed(pd.DataFrame())
    process.send_signal(signal.SIGSTOP)  # up, but answering nothing
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="TimeoutError"):
            state.history_for(["c1"], ["t1"])
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(StateUnavailable, match="tried again within 1 s"):
                state.append(["c1"], ["t1"], np.array([DAY]), np.ones(1))
        assert state.stats()["customer_rows"] == 0  # the last read, at once
        assert time.monotonic() - started < 0.1 < first
        time.sleep(BREAK_SECONDS + 0.1)  # half-open: a scrape is not the one to try
        started = time.monotonic()
        assert state.stats()["customer_rows"] == 0
        assert time.monotonic() - started < 0.1
    finally:
        process.send_signal(signal.SIGCONT)
    time.sleep(1.1)
    assert state.append(["c1"], ["t1"], np.array([DAY]), np.ones(1)) == 0  # back
    assert state.stats()["customer_rows"] == 1  # read again once the breaker closed
    state.close()


def test_a_request_after_redis_restarted_with_its_data_is_answered():
    """Redis restarted (its data kept, e.g. by persistence): the asyncio client's pooled
    connection is closed, and the request goes through on a new one instead of a 503."""
    process, url = start_redis_server()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    state = RedisOnlineState(url, "tests", "v1", 31)
    state.seed(pd.DataFrame())
    count = lambda history: len(history.customers)  # noqa: E731

    def request(i: int) -> tuple:
        return (["c"], ["t"], ["c"], ["t"], np.array([DAY + i]), np.ones(1), [f"{i}"], count)

    async def main() -> list[tuple[int, int]]:
        answers = [await state.score_and_add_async(*request(0))]
        nonlocal process
        process.terminate()
        process.wait(10)
        await asyncio.sleep(0.3)  # an idle server's loop: it sees the connection closed
        process, _ = start_redis_server(port)
        state.seed(pd.DataFrame())  # the data as persistence would keep it: seeded, empty
        answers.append(await state.score_and_add_async(*request(1)))
        return answers

    try:
        assert asyncio.run(main()) == [(0, 0), (0, 0)]
    finally:
        state.close()
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("in_script", [True, False], ids=["script reads", "MGET in MULTI"])
def test_a_reply_lost_after_redis_ran_the_step_is_a_503_not_a_second_step(
    fresh, monkeypatch, in_script
):
    """The connection breaks after Redis ran the step (a proxy reset, a failover): the step
    is not sent again, which would score the request on a history holding its own row. The
    request is refused (503); the client's retry is then counted as a repeat, once."""
    state = fresh()
    state.read_in_script = READ_IN_SCRIPT if in_script else 0
    count = lambda history: len(history.customers)  # noqa: E731
    read = aredis.Connection.read_response
    lost = []

    async def read_then_break(self, *args, **kwargs):
        reply = await read(self, *args, **kwargs)  # Redis ran the command
        if not lost:
            lost.append(reply)
            await self.disconnect(nowait=True)
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return reply

    def request(transaction: str, at: int) -> tuple:
        return (["c"], ["t"], ["c"], ["t"], np.array([DAY + at]), np.ones(1), [transaction], count)

    async def main() -> tuple:
        first = await state.score_and_add_async(*request("a", 0))
        monkeypatch.setattr(aredis.Connection, "read_response", read_then_break)
        with pytest.raises(StateUnavailable, match="cannot be reached"):
            await state.score_and_add_async(*request("b", 1))
        await asyncio.sleep(BREAK_SECONDS + 0.1)  # the breaker lets requests through again
        return first, await state.score_and_add_async(*request("b", 1))

    first, retried = asyncio.run(main())
    assert first == (0, 0) and lost
    assert retried == (2, 1)  # a and b in its history; b there already: counted once
    assert state.stats()["customer_rows"] == 2


def test_a_request_waiting_for_a_hanging_redis_leaves_the_event_loop_free():
    """The asyncio step awaits Redis: while one request waits out the timeout, the event
    loop goes on (other requests, the liveness probe); then the breaker refuses at once."""
    process, url = start_redis_server()
    state = RedisOnlineState(url, "tests", "v1", 31)
    state.seed(pd.DataFrame())
    count = lambda history: len(history.customers)  # noqa: E731
    request = (["c1"], ["t1"], ["c1"], ["t1"], np.array([DAY]), np.ones(1), ["a"], count)

    def later(i: int, customer: str) -> tuple:
        c, t = [customer], [f"t-{customer}"]
        return (c, t, c, t, np.array([DAY + i]), np.ones(1), [f"{i}"], count)

    async def main() -> tuple[int, float, float]:
        assert await state.score_and_add_async(*request) == (0, 0)  # connected, then stopped
        process.send_signal(signal.SIGSTOP)
        ticker, ticks = _ticker()
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="TimeoutError"):
            await state.score_and_add_async(*request)
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="tried again within 1 s"):
            await state.score_and_add_async(*request)
        refused = time.monotonic() - started
        ticker.cancel()
        await asyncio.sleep(1.1)  # the breaker lets requests through again
        waiting = asyncio.create_task(state.score_and_add_async(*later(1, "new")))
        await asyncio.sleep(0.2)
        waiting.cancel()  # e.g. the server shutting down: its reply must not go to the next
        with pytest.raises(asyncio.CancelledError):
            await waiting  # it was trying Redis again: the next request tries instead
        process.send_signal(signal.SIGCONT)
        # c1's one row; the cancelled request's reply (a new customer: no rows) is not read
        assert await state.score_and_add_async(*later(2, "c1")) == (1, 0)
        return ticks[0], first, refused

    try:
        ticks, first, refused = asyncio.run(main())
    finally:
        process.send_signal(signal.SIGCONT)
    assert 0.9 <= first < 1.5 and refused < 0.1  # one timeout: not tried again
    assert ticks >= 30  # about 90 in the second waited; a synchronous call: none
    state.close()
    process.terminate()
    process.wait(10)


def test_a_request_of_more_transactions_than_a_chunk_awaits_redis_too(own_redis, monkeypatch):
    """A request over :data:`CHUNK` transactions (read, scored, then added a chunk at a time)
    awaits each round trip: a hanging Redis leaves the event loop ticking, as for a small
    one."""
    monkeypatch.setattr("serving.redis_state.CHUNK", 2)
    process, url = own_redis
    state = RedisOnlineState(url, "tests", "v1", 31)
    state.seed(pd.DataFrame())
    count = lambda history: len(history.customers)  # noqa: E731
    ids = [f"c{i}" for i in range(5)]

    def request(at: int) -> tuple:
        times = np.full(5, DAY + at)
        return (ids, ids, ids, ids, times, np.ones(5), [f"{at}-{i}" for i in range(5)], count)

    async def main() -> tuple[tuple[int, int], int, float]:
        first = await state.score_and_add_async(*request(0))
        process.send_signal(signal.SIGSTOP)
        ticker, ticks = _ticker()
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="TimeoutError"):
            await state.score_and_add_async(*request(1))
        waited = time.monotonic() - started
        ticker.cancel()
        return first, ticks[0], waited

    try:
        first, ticks, waited = asyncio.run(main())
    finally:
        state.close()
    assert first == (0, 0)  # 5 new customers: no rows before, none there already
    assert 0.9 <= waited < 1.5 and ticks >= 30  # a synchronous read: no tick


def test_after_the_break_one_request_tries_a_hanging_redis_and_the_others_are_refused(
    own_redis,
):
    """Half-open: once the breaker's second is over, one request waits on Redis again while
    the others are refused at once, instead of each waiting out a timeout; when Redis
    answers, the breaker closes."""
    process, url = own_redis
    state = RedisOnlineState(url, "tests", "v1", 31)
    state.seed(pd.DataFrame())
    count = lambda history: len(history.customers)  # noqa: E731

    def request(i: int) -> tuple:
        return (["c"], ["t"], ["c"], ["t"], np.array([DAY + i]), np.ones(1), [f"{i}"], count)

    def timed(i: int) -> Awaitable[tuple[float, str]]:
        return timed_step(state.score_and_add_async(*request(i)))

    async def main() -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
        assert await state.score_and_add_async(*request(0)) == (0, 0)
        process.send_signal(signal.SIGSTOP)
        assert "TimeoutError" in (await timed(1))[1]  # the breaker opens
        stream = []
        for i in range(2, 152):  # 3 s, a request every 20 ms
            stream.append(asyncio.create_task(timed(i)))
            await asyncio.sleep(0.02)
        during = await asyncio.gather(*stream)
        process.send_signal(signal.SIGCONT)
        await asyncio.sleep(BREAK_SECONDS + 0.1)
        after = [await timed(i) for i in range(152, 155)]
        return during, after

    try:
        during, after = asyncio.run(main())
    finally:
        state.close()
    waited = [seconds for seconds, _ in during if seconds > 0.5]
    assert 1 <= len(waited) <= 2, waited  # the one trying; all who come in its second: ~50
    assert all(0.9 < seconds < 1.5 for seconds in waited)
    assert sum("one call is trying it again" in outcome for _, outcome in during) >= 40
    assert not any(outcome == "scored" for _, outcome in during)
    assert [outcome for _, outcome in after] == ["scored"] * 3  # closed again
    assert all(seconds < 0.1 for seconds, _ in after)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw1@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw1@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://host:6380/0?password=pw1&ssl_cert_reqs=none", None),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    text = RedisOnlineState(url, "m", "v1", 31).url
    assert "pw1" not in text
    if shown is not None:
        assert text == shown
    else:
        assert "password=***" in text and "ssl_cert_reqs=none" in text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", None),
        ("redis://:pw1@redis.example.com:6379/0", None),
        ("rediss://redis.example.com:6380/0", None),
        ("http://redis:6379/0", "must specify one of the following schemes"),
        ("redis://:pw1@redis:notaport/0", "Port could not be cast"),
    ],
)
def test_python_m_serving_refuses_a_malformed_redis_url_naming_the_option(url, problem):
    from serving.__main__ import check_redis_url

    found = check_redis_url(url)
    if problem is None:
        assert found is None
    else:
        assert found.startswith("--state_redis_url ") and problem in found
        assert "pw1" not in found and "redis://[user:password@]host:6379/0" in found


def test_fraudops_state_lists_versions_and_drops_only_a_retired_one(redis_url, tmp_path):
    from typer.testing import CliRunner

    from components.store import LocalStore
    from fraudops.cli import app

    model = f"m{uuid.uuid4().hex[:6]}"
    store = LocalStore(tmp_path / "store")
    store.put_json(f"models/{model}/aliases/champion.json", {"version": "v1"})
    frame = pd.DataFrame(
        {
            "transaction_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "customer_id": ["c1", "c2"],
            "terminal_id": ["t1", "t1"],
            "amount": [1.0, 2.0],
        }
    )
    for name, version in ((model, "v1"), (model, "v2"), (f"{model}-other", "v2")):
        RedisOnlineState(redis_url, name, version, 31).seed(frame)
    runner = CliRunner()
    common = ["--redis-url", redis_url]
    listed = runner.invoke(app, ["state", "list", model, *common])
    assert listed.exit_code == 0, listed.output
    assert "v1" in listed.output and "v2" in listed.output and "other" not in listed.output
    refused = runner.invoke(
        app, ["state", "drop", "v1", "--model", model, *common, "--store", str(tmp_path / "store")]
    )
    assert refused.exit_code == 2 and "is the champion" in refused.output
    dropped = runner.invoke(
        app, ["state", "drop", "v2", "--model", model, *common, "--store", str(tmp_path / "store")]
    )
    assert dropped.exit_code == 0 and "deleted 9 key(s)" in dropped.output, dropped.output
    client = redis.Redis.from_url(redis_url)
    assert [v["version"] for v in stored_versions(client, model)] == ["v1"]
    assert stored_versions(client, f"{model}-other")[0]["rows"] == 2  # another model: kept
    for name, version in ((model, "v1"), (f"{model}-other", "v2")):
        drop_version(client, name, version)


def test_fraudops_state_prune_drops_only_versions_no_alias_names_and_no_replica_serves(
    redis_url, tmp_path
):
    """Kept: the canary, a version a replica serves, one being seeded, one seeded a moment ago
    (its replica is still loading); another model's is not looked at. A wrong store (no
    alias at all) or an unreachable Redis is an error that says what to check."""
    from typer.testing import CliRunner

    from components.store import LocalStore
    from fraudops.cli import app

    model = f"m{uuid.uuid4().hex[:6]}"
    store = LocalStore(tmp_path / "store")
    store.put_json(f"models/{model}/aliases/canary.json", {"version": "v1"})
    versions = ("v1", "v2", "v3", "v4", "v5")
    states = {v: RedisOnlineState(redis_url, model, v, 31) for v in versions}
    for version in ("v1", "v2", "v4", "v5"):
        states[version].seed(pd.DataFrame())
    states["v2"].mark_served()  # a replica has it loaded (no alias: e.g. an old canary's)
    states["v3"].redis.set(states["v3"].prefix + "seeding", "replica-0")  # being seeded
    an_hour_ago = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)).isoformat()
    states["v4"].redis.set(states["v4"].prefix + "seeded", f'{{"at": "{an_hour_ago}"}}')
    other = RedisOnlineState(redis_url, f"{model}-other", "v9", 31)
    other.seed(pd.DataFrame())  # another model's: never looked at
    common = ["state", "prune", "--model", model, "--redis-url", redis_url]
    args = [*common, "--store", str(store.root)]
    runner = CliRunner()
    client = redis.Redis.from_url(redis_url)
    try:
        dry = runner.invoke(app, [*args, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "would delete the states of 1 retired version(s)" in dry.output
        assert len(stored_versions(client, model)) == 5
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        kept = {v["version"]: v for v in stored_versions(client, model)}
        assert sorted(kept) == ["v1", "v2", "v3", "v5"]
        lines = {line.split()[2].rstrip(":"): line for line in done.output.splitlines()[:-1]}
        assert lines["v4"].startswith("deleted") and "retired" in lines["v4"]
        for version, why in (
            ("v1", "the canary"),
            ("v2", "served by"),
            ("v3", "being seeded"),
            ("v5", "s ago (a replica is loading it)"),
        ):
            assert lines[version].startswith("kept") and why in lines[version], lines[version]
        assert kept["v2"]["served"]["by"].endswith(f":{os.getpid()}")
        assert kept["v3"]["seeding"] and client.get(states["v3"].prefix + "seeding") == b"replica-0"
        assert len(stored_versions(client, f"{model}-other")) == 1

        wrong = runner.invoke(app, [*common, "--store", str(tmp_path / "elsewhere")])
        assert wrong.exit_code == 2 and "no alias" in wrong.output and "--store" in wrong.output
        assert len(stored_versions(client, model)) == 4  # nothing deleted
        unreachable = ["--redis-url", "redis://:pw@127.0.0.1:1/0"]
        down = runner.invoke(app, [*args[:4], "--store", str(store.root), *unreachable])
        assert down.exit_code == 2 and "cannot be reached" in down.output, down.output
        assert "Traceback" not in down.output and ":pw@" not in down.output
    finally:
        for version, state in [*states.items(), ("v9", other)]:
            drop_version(client, state.model, version)
            state.close()


def test_a_loaded_replica_marks_its_version_served_until_it_stops(fresh):
    state = fresh()
    served = state.prefix + "served"

    def wait_for_the_mark() -> None:
        deadline = time.monotonic() + 10
        while not state.redis.exists(served):
            assert time.monotonic() < deadline, "not marked served"
            time.sleep(0.01)

    state.start_heartbeat(every=0.05)
    wait_for_the_mark()
    assert 0 < state.redis.ttl(served) <= SERVED_SECONDS
    state.redis.delete(served)
    wait_for_the_mark()  # marked again
    beating = state.heartbeat_thread
    state.stop_heartbeat()
    beating.join(5)
    assert not beating.is_alive()
    state.redis.delete(served)
    time.sleep(0.2)
    assert not state.redis.exists(served)  # stopped: the mark lapses
